"""Building the graph an inventory describes: its entities, their ids, attributes and relations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, RelationKind, entity_id

if TYPE_CHECKING:
    from vigil.topology.inventory import Inventory, Job, Node, Storage


def build_topology(inventory: Inventory, at: float = 0.0) -> Topology:
    """The entities and relations `inventory` describes, added to a new Topology at `at`.

    `inventory` must be free of `semantic_problems`: every name it refers to exists.
    """
    return _Builder(inventory, at).build()


class _Builder:
    def __init__(self, inventory: Inventory, at: float) -> None:
        self.inventory = inventory
        self.at = at
        self.topology = Topology()

    def add(self, kind: EntityKind, *parts: str, attrs: dict[str, str] | None = None) -> str:
        node_id = entity_id(kind, *parts)
        self.topology.add_entity(node_id, attrs, at=self.at)
        return node_id

    def relate(self, src: str, kind: RelationKind, dst: str) -> None:
        self.topology.add_relation(src, kind, dst, at=self.at)

    def build(self) -> Topology:
        # The cluster contains its racks only: a cluster that "contained" its switches and
        # storage too would be a shortcut between any two of them for physical-path queries.
        inventory = self.inventory
        cluster = self.add(EntityKind.CLUSTER, inventory.cluster.name)
        if inventory.cluster.region is not None:
            region = self.add(EntityKind.REGION, inventory.cluster.region)
            self.relate(region, RelationKind.CONTAINS, cluster)
        for feed in inventory.power:
            self.add(EntityKind.POWER, feed.name)
        for switch in inventory.switches:
            self.add(EntityKind.SWITCH, switch.name, attrs={"tier": switch.tier})
        for switch in inventory.switches:
            for spine in switch.uplinks:  # core outward: spine -> link -> leaf
                link = self.add(EntityKind.LINK, spine, switch.name)
                self.relate(entity_id(EntityKind.SWITCH, spine), RelationKind.CONNECTS, link)
                self.relate(link, RelationKind.CONNECTS, entity_id(EntityKind.SWITCH, switch.name))
        named = [n.partition for r in inventory.racks for n in r.nodes if n.partition is not None]
        for partition in dict.fromkeys(named):
            self.add(EntityKind.PARTITION, partition)
        for rack in inventory.racks:
            rack_id = self.add(EntityKind.RACK, rack.name)
            self.relate(cluster, RelationKind.CONTAINS, rack_id)
            if rack.power is not None:
                power = entity_id(EntityKind.POWER, rack.power)
                self.relate(rack_id, RelationKind.DEPENDS_ON, power)
            for node in rack.nodes:
                self.relate(rack_id, RelationKind.CONTAINS, self.host(node))
        for storage in inventory.storage:
            self.storage(storage)
        for job in inventory.jobs:
            self.job(job)
        return self.topology

    def host(self, node: Node) -> str:
        host = {"host.name": node.name}
        node_id = self.add(EntityKind.NODE, node.name, attrs=host)
        if node.partition is not None:
            partition = entity_id(EntityKind.PARTITION, node.partition)
            self.relate(node_id, RelationKind.MEMBER_OF, partition)
        rails: dict[int, str] = {}
        for nic in node.nics:
            attrs = host | {"ib.device": nic.name}  # indexed per host by Topology
            if nic.rail is not None:
                attrs["rail"] = str(nic.rail)
            nic_id = self.add(EntityKind.NIC, node.name, nic.name, attrs=attrs)
            self.relate(node_id, RelationKind.CONTAINS, nic_id)
            if nic.rail is not None:
                rails[nic.rail] = nic_id
            link = self.add(EntityKind.LINK, nic.leaf, nic.port)  # core outward: leaf, link, NIC
            self.relate(entity_id(EntityKind.SWITCH, nic.leaf), RelationKind.CONNECTS, link)
            self.relate(link, RelationKind.CONNECTS, nic_id)
        for gpu in node.gpu_list():
            attrs = host | {"gpu": str(gpu.index)}  # dcgm-exporter's label names
            if gpu.uuid is not None:
                attrs["UUID"] = gpu.uuid
            if gpu.pci_bus_id is not None:
                attrs["pci_bus_id"] = gpu.pci_bus_id
            gpu_id = self.add(EntityKind.GPU, node.name, str(gpu.index), attrs=attrs)
            self.relate(node_id, RelationKind.CONTAINS, gpu_id)
            if gpu.index in rails:
                self.relate(gpu_id, RelationKind.DEPENDS_ON, rails[gpu.index])
        return node_id

    def storage(self, storage: Storage) -> None:
        storage_id = self.add(EntityKind.STORAGE, storage.name, attrs={"type": storage.type})
        every_node = [node.name for rack in self.inventory.racks for node in rack.nodes]
        for volume in storage.volumes:
            volume_id = self.add(EntityKind.VOLUME, storage.name, volume.name)
            self.relate(storage_id, RelationKind.CONTAINS, volume_id)
            mounters = every_node if "*" in volume.mounted_by else volume.mounted_by
            for name in dict.fromkeys(mounters):
                self.relate(entity_id(EntityKind.NODE, name), RelationKind.MOUNTS, volume_id)

    def job(self, job: Job) -> None:
        tp, pp = job.tensor_parallel, job.pipeline_parallel
        job_id = self.add(EntityKind.JOB, job.name, attrs={
            "world_size": str(job.world_size), "tensor_parallel": str(tp),
            "pipeline_parallel": str(pp), "data_parallel": str(job.world_size // (tp * pp)),
        })
        if job.volume is not None:
            storage, volume = job.volume.split("/")
            volume_id = entity_id(EntityKind.VOLUME, storage, volume)
            self.relate(job_id, RelationKind.MOUNTS, volume_id)
        gpus = {node.name: node.gpu_list() for rack in self.inventory.racks for node in rack.nodes}
        for rank in range(job.world_size):
            node = job.nodes[rank // job.ranks_per_node]
            gpu = gpus[node][rank % job.ranks_per_node]
            data, stage, tensor = job.coordinates(rank)
            rank_id = self.add(EntityKind.RANK, job.name, str(rank),
                               attrs={"dp": str(data), "pp": str(stage), "tp": str(tensor)})
            gpu_id = entity_id(EntityKind.GPU, node, str(gpu.index))
            self.relate(rank_id, RelationKind.RUNS_ON, gpu_id)
            self.relate(rank_id, RelationKind.MEMBER_OF, job_id)
