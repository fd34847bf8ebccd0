"""Fabric loaders: ibnetdiscover and lldpctl output parsed, applied, checked against inventory."""

from __future__ import annotations

from pathlib import Path

import pytest
from vigil.topology.fabric import (
    Cable,
    Fabric,
    Neighbor,
    apply_fabric,
    apply_lldp,
    lldp_port_name,
    parse_ibnetdiscover,
    parse_lldpctl_json,
    switch_name,
)
from vigil.topology.graph import Topology
from vigil.topology.inventory import load_inventory
from vigil.topology.model import EntityKind, Relation, RelationKind

DATA = Path(__file__).parent / "data" / "fabric"
INVENTORY = DATA / "inventory.yaml"
HOSTS = ("gpu-a-001", "gpu-a-002", "gpu-b-001", "gpu-b-002")
SPINE, LEAF_1, LEAF_2 = "0xfc6a1c0300a10000", "0xfc6a1c0300b10000", "0xfc6a1c0300b20000"
RDMA = {"ens1f0np0": "mlx5_0", "ens2f0np0": "mlx5_1"}  # as ibdev2netdev prints them


def _hca(host: str, device: int) -> str:
    """The fixture's HCA GUIDs: a088c20300, rack, 00, host number, device, 0."""
    rack, number = host.split("-")[1], int(host.split("-")[2])
    return f"0xa088c20300{rack}00{number}{device}0"


def _fabric(name: str = "ibnetdiscover.txt") -> Fabric:
    return parse_ibnetdiscover((DATA / name).read_text())


def _edges(topo: Topology) -> set[tuple[str, str, str]]:
    return {(src, str(data["kind"]), dst) for src, dst, data in topo.view().edges(data=True)}


def _without(text: str, *needles: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(needle in line for needle in needles))


# --- ibnetdiscover: parsing -------------------------------------------------------------

def test_parse_counts_switches_cas_and_cables() -> None:
    fabric = _fabric()
    assert [(s.name, s.guid, s.ports, s.lid) for s in fabric.switches] == [
        ("spine-1", SPINE, 65, 1), ("leaf-1", LEAF_1, 65, 2), ("leaf-2", LEAF_2, 65, 3)]
    assert fabric.switches[1].description == "MF0;leaf-1:MQM9700/U1"
    # 8 HCAs and each switch's SHARP aggregation node, which names no host.
    assert len(fabric.cas) == 11
    hcas = [(ca.host, ca.device, ca.guid) for ca in fabric.cas if ca.host is not None]
    assert hcas == [(h, f"mlx5_{d}", _hca(h, d)) for h in HOSTS for d in (0, 1)]
    aggregation = [ca for ca in fabric.cas if ca.host is None]
    assert [ca.guid for ca in aggregation] == ["0xfc6a1c0300a10008", "0xfc6a1c0300b10008",
                                               "0xfc6a1c0300b20008"]
    assert {ca.description for ca in aggregation} == {"Mellanox Technologies Aggregation Node"}
    # 8 HCA cables + 4 leaf-spine cables + 3 aggregation nodes, each once though listed twice.
    assert len(fabric.cables) == 15


def test_parse_finds_exactly_the_cables_of_the_fixture() -> None:
    expected = {Cable(SPINE, 1, LEAF_1, 33), Cable(SPINE, 2, LEAF_1, 34),
                Cable(SPINE, 3, LEAF_2, 33), Cable(SPINE, 4, LEAF_2, 34),
                Cable(SPINE, 65, "0xfc6a1c0300a10008", 1),
                Cable(LEAF_1, 65, "0xfc6a1c0300b10008", 1),
                Cable(LEAF_2, 65, "0xfc6a1c0300b20008", 1)}
    for number, host in enumerate(HOSTS, start=1):
        expected.add(Cable(LEAF_1, number, _hca(host, 0), 1))
        expected.add(Cable(LEAF_2, number, _hca(host, 1), 1))
    assert set(_fabric().cables) == expected


def test_parse_sees_the_miscabled_hca_where_it_is() -> None:
    cables = set(_fabric("ibnetdiscover_miscabled.txt").cables)
    assert Cable(LEAF_1, 5, _hca("gpu-b-001", 1), 1) in cables
    assert Cable(LEAF_2, 3, _hca("gpu-b-001", 1), 1) not in cables
    assert len(cables) == 15


@pytest.mark.parametrize(("description", "name"), [
    ("MF0;leaf-1:MQM9700/U1", "leaf-1"),  # NVIDIA switches: MF0;<hostname>:<model>/U1
    ("MF0;IB-ComputeLeaf-101:MQM8700/U1", "IB-ComputeLeaf-101"),
    ("spine-3", "spine-3"),  # a bare name, e.g. from --node-name-map
    ("Quantum Mellanox Technologies", "sw-fc6a1c0300b10000"),  # the factory default
    ("SUN DCS 36P QDR ib-sw-2 10.0.0.5", "sw-fc6a1c0300b10000"),
])
def test_switch_names_come_from_descriptions(description: str, name: str) -> None:
    assert switch_name(description, "0xfc6a1c0300b10000") == name


def test_parse_older_and_grouped_output_and_partial_dumps() -> None:
    # The man page's layout: a base port 0, short port GUIDs, a Voltaire-style description;
    # -g adds Chassis lines and [ext N]; the CA the switch names has no block of its own.
    text = (
        "# Topology file: generated on Mon Jun  4 14:15:10 2012\n"
        "Non-Chassis Nodes\n"
        "Chassis 1 (guid 0x8f10400410015)\n\n"
        "vendid=0x8f1\ndevid=0x5a06\nswitchguid=0x8f10400410016(8f10400410016)\n"
        'Switch  24 "S-0008f10400410016"         # "ISR9024D Voltaire" base port 0 lid 6 lmc 0\n'
        '[22][ext 4]    "H-0008f10403961300"[1](8f10403961301)         '
        '# "node17 HCA-1" lid 4 4xSDR\n')
    fabric = parse_ibnetdiscover(text)
    assert [(s.name, s.lid, s.ports) for s in fabric.switches] == [
        ("sw-0008f10400410016", 6, 24)]
    assert [(c.host, c.device, c.ports) for c in fabric.cas] == [("node17", "HCA-1", 0)]
    assert fabric.cables == (Cable("0x0008f10400410016", 22, "0x0008f10403961300", 1),)


BAD_IBNETDISCOVER = {
    "garbage": ('# header\n\n<html><body>502 Bad Gateway</body></html>\n', 3),
    "port before any node": ('[1]\t"S-fc6a1c0300b10000"[1]\t\t# "leaf-1" lid 2 4xNDR\n', 1),
    "port beyond the node's ports":
        ('Ca\t1 "H-a088c20300a00100"\t\t# "gpu-a-001 mlx5_0"\n'
         '[2](a088c20300a00100) \t"S-fc6a1c0300b10000"[1]\t\t# lid 11 lmc 0 "leaf-1" lid 2 4xNDR\n',
         2),
    "one port, two cables":
        ('Switch\t65 "S-fc6a1c0300b10000"\t\t# "leaf-1" enhanced port 0 lid 2 lmc 0\n'
         '[1]\t"H-a088c20300a00100"[1](a088c20300a00100) \t\t# "gpu-a-001 mlx5_0" lid 11 4xNDR\n'
         '\n'
         'Ca\t1 "H-a088c20300a00100"\t\t# "gpu-a-001 mlx5_0"\n'
         '[1](a088c20300a00100) \t"S-fc6a1c0300b10000"[7]\t\t# lid 11 lmc 0 "leaf-1" lid 2 4xNDR\n',
         5),
    "a node listed twice":
        ('Ca\t1 "H-a088c20300a00100"\t\t# "gpu-a-001 mlx5_0"\n'
         'Ca\t1 "H-a088c20300a00100"\t\t# "gpu-a-001 mlx5_0"\n', 2),
    "a truncated switch line": ('Switch\t65 "S-fc6a1c0300b10000"\t\t# "leaf-1" enhanced\n', 1),
}


@pytest.mark.parametrize(("text", "line"), BAD_IBNETDISCOVER.values(), ids=BAD_IBNETDISCOVER)
def test_malformed_ibnetdiscover_names_the_line(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=rf"^line {line}: "):
        parse_ibnetdiscover(text)


# --- ibnetdiscover: applying --------------------------------------------------------------

def test_apply_to_an_empty_topology_builds_the_fabric() -> None:
    topo = Topology()
    assert apply_fabric(topo, _fabric(), at=10.0) == []
    nics = {f"nic:{h}/mlx5_{d}" for h in HOSTS for d in (0, 1)}
    cables = {f"link:leaf-{d + 1}/p{n}" for n in range(1, 5) for d in (0, 1)}
    uplinks = {"link:spine-1/leaf-1", "link:spine-1/leaf-2"}
    assert set(topo.entities()) == ({"switch:spine-1", "switch:leaf-1", "switch:leaf-2"}
                                    | {f"node:{h}" for h in HOSTS} | nics | cables | uplinks)
    expected = {("link:spine-1/leaf-1", "connects", "switch:leaf-1"),
                ("link:spine-1/leaf-2", "connects", "switch:leaf-2"),
                ("switch:spine-1", "connects", "link:spine-1/leaf-1"),
                ("switch:spine-1", "connects", "link:spine-1/leaf-2")}
    for number, host in enumerate(HOSTS, start=1):
        for device in (0, 1):
            nic, link = f"nic:{host}/mlx5_{device}", f"link:leaf-{device + 1}/p{number}"
            expected |= {(f"node:{host}", "contains", nic), (link, "connects", nic),
                         (f"switch:leaf-{device + 1}", "connects", link)}
    assert _edges(topo) == expected
    assert len(topo) == 25 and topo.relation_count() == 28
    leaf, spine, nic_entity = (topo.entity("switch:leaf-2"), topo.entity("switch:spine-1"),
                               topo.entity("nic:gpu-b-001/mlx5_1"))
    assert leaf is not None and spine is not None and nic_entity is not None
    assert dict(leaf.attrs) == {"ib.guid": LEAF_2, "tier": "leaf"}
    assert dict(spine.attrs) == {"ib.guid": SPINE, "tier": "spine"}
    assert dict(nic_entity.attrs) == {"host.name": "gpu-b-001", "ib.device": "mlx5_1",
                                      "ib.guid": _hca("gpu-b-001", 1)}
    assert nic_entity.valid_from == 10.0


def test_the_fabric_the_inventory_describes_agrees_with_it() -> None:
    topo = load_inventory(INVENTORY)
    entities, edges = set(topo.entities()), _edges(topo)
    assert apply_fabric(topo, _fabric(), at=10.0) == []
    assert set(topo.entities()) == entities and _edges(topo) == edges  # confirmed, not added
    # ...and now a fabric event naming a GUID finds its NIC or switch.
    assert topo.index("ib.guid", _hca("gpu-a-002", 1)) == "nic:gpu-a-002/mlx5_1"
    assert topo.index("ib.guid", LEAF_1) == "switch:leaf-1"
    assert topo.attr("nic:gpu-a-002/mlx5_1", "rail") == "1"  # inventory attrs are kept
    assert apply_fabric(topo, _fabric(), at=20.0) == []  # and a second run changes nothing
    assert _edges(topo) == edges


def test_one_miscabled_hca_is_one_discrepancy_naming_both_places() -> None:
    topo = load_inventory(INVENTORY)
    problems = apply_fabric(topo, _fabric("ibnetdiscover_miscabled.txt"), at=10.0)
    assert problems == ["nic:gpu-b-001/mlx5_1 is cabled to leaf-1/p5 per ibnetdiscover, but the "
                        "inventory says leaf-2/p3"]
    # The graph now follows the cable, and remembers where the inventory had it.
    assert topo.relations("nic:gpu-b-001/mlx5_1")[-1] == \
        Relation("link:leaf-1/p5", RelationKind.CONNECTS, "nic:gpu-b-001/mlx5_1")
    assert Relation("switch:leaf-1", RelationKind.CONNECTS, "link:leaf-1/p5") in \
        topo.relations("link:leaf-1/p5")
    assert topo.relations("link:leaf-2/p3") == [
        Relation("switch:leaf-2", RelationKind.CONNECTS, "link:leaf-2/p3")]
    assert Relation("link:leaf-2/p3", RelationKind.CONNECTS, "nic:gpu-b-001/mlx5_1") in \
        topo.relations("link:leaf-2/p3", at=5.0)


def test_a_link_that_is_down_is_reported_and_kept() -> None:
    text = _without((DATA / "ibnetdiscover.txt").read_text(), "a088c20300b00200")
    topo = load_inventory(INVENTORY)
    assert apply_fabric(topo, parse_ibnetdiscover(text), at=10.0) == [
        "nic:gpu-b-002/mlx5_0 is cabled to leaf-1/p4 in the inventory, but ibnetdiscover sees "
        "nothing there (down or unplugged)"]
    assert Relation("link:leaf-1/p4", RelationKind.CONNECTS, "nic:gpu-b-002/mlx5_0") in \
        topo.relations("link:leaf-1/p4")


def test_an_hca_the_inventory_does_not_list_on_a_known_host() -> None:
    text = (DATA / "ibnetdiscover.txt").read_text().replace("gpu-a-001 mlx5_0", "gpu-a-001 mlx5_4")
    topo = load_inventory(INVENTORY)
    assert apply_fabric(topo, parse_ibnetdiscover(text), at=10.0) == [
        "nic:gpu-a-001/mlx5_4 is cabled to leaf-1/p1 per ibnetdiscover, but the inventory lists "
        "no such NIC on node:gpu-a-001; the inventory has nic:gpu-a-001/mlx5_0 there"]
    assert Relation("node:gpu-a-001", RelationKind.CONTAINS, "nic:gpu-a-001/mlx5_4") in \
        topo.relations("nic:gpu-a-001/mlx5_4")


def test_missing_and_unlisted_uplinks() -> None:
    text = _without((DATA / "ibnetdiscover.txt").read_text(), '"S-fc6a1c0300b20000"[33]',
                    '"S-fc6a1c0300b20000"[34]', '"S-fc6a1c0300a10000"[3]',
                    '"S-fc6a1c0300a10000"[4]')
    topo = load_inventory(INVENTORY)
    assert apply_fabric(topo, parse_ibnetdiscover(text), at=10.0) == [
        "link:spine-1/leaf-2 is in the inventory, but ibnetdiscover sees no cable between "
        "spine-1 and leaf-2"]
    topo = Topology()
    for name, tier in (("spine-1", "spine"), ("leaf-1", "leaf"), ("leaf-2", "leaf")):
        topo.add_entity(f"switch:{name}", {"tier": tier})
    assert apply_fabric(topo, _fabric(), at=10.0) == [
        "ibnetdiscover sees a cable between spine-1/p1 and leaf-1/p33, but the inventory has "
        "no uplink link:spine-1/leaf-1",
        "ibnetdiscover sees a cable between spine-1/p3 and leaf-2/p33, but the inventory has "
        "no uplink link:spine-1/leaf-2"]


def test_a_replaced_switch_is_reported_by_its_new_guid() -> None:
    topo = load_inventory(INVENTORY)
    assert apply_fabric(topo, _fabric(), at=10.0) == []
    swapped = (DATA / "ibnetdiscover.txt").read_text().replace("fc6a1c0300b20000",
                                                               "fc6a1c0300b2ffff")
    assert apply_fabric(topo, parse_ibnetdiscover(swapped), at=20.0) == [
        f"switch:leaf-2 has GUID {LEAF_2} in the inventory, but ibnetdiscover sees "
        "0xfc6a1c0300b2ffff (replaced?)"]
    assert topo.index("ib.guid", "0xfc6a1c0300b2ffff") == "switch:leaf-2"


# --- lldpctl -----------------------------------------------------------------------------

def test_parse_lldpctl_with_one_interface() -> None:
    assert parse_lldpctl_json((DATA / "lldpctl_single.json").read_text()) == [
        Neighbor("ens1f0np0", "leaf-1", "9c:05:91:4e:21:00", "swp1", "ifname",
                 "gpu-a-001 rail 0")]


def test_parse_lldpctl_with_a_list_of_interfaces() -> None:
    assert parse_lldpctl_json((DATA / "lldpctl_list.json").read_text()) == [
        Neighbor("eno1", None, "00:1b:21:7a:90:3c", "17", "local", None),
        Neighbor("ens1f0np0", "leaf-1", "9c:05:91:4e:21:00", "swp2", "ifname",
                 "gpu-a-002 rail 0"),
        Neighbor("ens2f0np0", "leaf-2.lab-2.example.net", "b8:3f:d2:6a:11:80", "Eth1/2",
                 "ifname", "gpu-a-002 ens2f0np0")]
    assert parse_lldpctl_json('{"lldp": {}}') == []  # lldpd's answer when nothing is heard


@pytest.mark.parametrize(("port_id", "kind", "description", "name"), [
    ("swp3", "ifname", None, "p3"), ("Ethernet12", "local", None, "p12"),
    ("Eth1/3", "ifname", None, "p3"), ("7", "local", None, "p7"),
    ("ge-1/0/1", "ifname", None, "ge-1_0_1"), ("Eth2/3", "ifname", None, "Eth2_3"),
    ("00:00:00:00:00:02", "mac", "eth1", "p1"),  # lldpd's default: the name is in descr
    ("00:00:00:00:00:02", "mac", None, None),
])
def test_lldp_port_names_follow_the_inventory(port_id: str, kind: str, description: str | None,
                                               name: str | None) -> None:
    neighbor = Neighbor("eth0", "leaf-1", None, port_id, kind, description)
    assert lldp_port_name(neighbor) == name


def test_lldp_of_hosts_cabled_as_the_inventory_says_agrees_with_it() -> None:
    topo = load_inventory(INVENTORY)
    entities, edges = set(topo.entities()), _edges(topo)
    single = parse_lldpctl_json((DATA / "lldpctl_single.json").read_text())
    listed = parse_lldpctl_json((DATA / "lldpctl_list.json").read_text())
    assert apply_lldp(topo, "gpu-a-001", single, at=10.0, rdma_devices=RDMA) == []
    # leaf-2 answers with its FQDN and an Eth1/2 port; eno1's neighbour names no system.
    assert apply_lldp(topo, "gpu-a-002", listed, at=10.0, rdma_devices=RDMA) == []
    assert set(topo.entities()) == entities and _edges(topo) == edges
    assert topo.attr("nic:gpu-a-002/mlx5_1", "network.interface.name") == "ens2f0np0"


def test_lldp_from_the_wrong_host_names_both_places() -> None:
    topo = load_inventory(INVENTORY)
    listed = parse_lldpctl_json((DATA / "lldpctl_list.json").read_text())
    assert apply_lldp(topo, "gpu-a-001", listed, at=10.0, rdma_devices=RDMA) == [
        "nic:gpu-a-001/mlx5_0 is cabled to leaf-1/p2 per LLDP, but the inventory says "
        "leaf-1/p1; the inventory has nic:gpu-a-002/mlx5_0 there",
        "nic:gpu-a-001/mlx5_1 is cabled to leaf-2/p2 per LLDP, but the inventory says "
        "leaf-2/p1; the inventory has nic:gpu-a-002/mlx5_1 there"]
    assert topo.relations("link:leaf-1/p2")[0] == \
        Relation("link:leaf-1/p2", RelationKind.CONNECTS, "nic:gpu-a-001/mlx5_0")


def test_lldp_on_an_empty_topology_adds_host_nics_switches_and_links() -> None:
    topo = Topology()
    listed = parse_lldpctl_json((DATA / "lldpctl_list.json").read_text())
    assert apply_lldp(topo, "gpu-a-002", listed, at=10.0) == []
    assert set(topo.entities(EntityKind.NIC)) == {"nic:gpu-a-002/ens1f0np0",
                                                  "nic:gpu-a-002/ens2f0np0"}
    assert set(topo.entities(EntityKind.SWITCH)) == {"switch:leaf-1",
                                                     "switch:leaf-2.lab-2.example.net"}
    assert ("link:leaf-2.lab-2.example.net/p2", "connects", "nic:gpu-a-002/ens2f0np0") in \
        _edges(topo)
    assert topo.attr("switch:leaf-1", "tier") == "leaf"


BAD_LLDP = {
    "not JSON": ('{\n  "lldp": {\n    "interface": {,\n', r"^line 3: not JSON"),
    "not lldpctl": ('{"neighbors": []}', r"^line 1: expected \{\"lldp\""),
    "json0": ('{"lldp": [{"interface": []}]}', r"json0 is not supported"),
    "interface not an object": ('{"lldp": {"interface": ["eth0"]}}',
                                r"^lldp\.interface\[0\]: expected an object"),
    "port not an object": ('{"lldp": {"interface": {"eth0": {"port": "swp1"}}}}',
                           r"^lldp\.interface\[0\]\.eth0\.port: expected an object"),
}


@pytest.mark.parametrize(("text", "message"), BAD_LLDP.values(), ids=BAD_LLDP)
def test_malformed_lldpctl_output_says_where(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_lldpctl_json(text)


def test_libibmad_complaints_are_kept_aside() -> None:
    fabric = parse_ibnetdiscover(
        "ibwarn: [1234] mad_rpc: _do_madrpc failed; dport (DR path 0,1)\n"
        'Switch\t65 "S-fc6a1c0300b10000"\t\t# "leaf-1" enhanced port 0 lid 2 lmc 0\n')
    assert fabric.diagnostics == (
        "line 1: ibwarn: [1234] mad_rpc: _do_madrpc failed; dport (DR path 0,1)",)
    assert [s.name for s in fabric.switches] == ["leaf-1"]


def test_real_lab_output_with_stderr_noise_and_loopbacks() -> None:
    """Real ibnetdiscover output (see data/fabric/README.md): libibmad's timeout complaint
    on line 1, SwitchIB loopback port pairs, HCAs described "host HCA-N", a leaf-to-leaf
    cable. All twelve nodes load; the oddities are reported, not fatal."""
    fabric = _fabric("ibnetdiscover_ufm_lab.txt")
    assert [d[:30] for d in fabric.diagnostics] == ["line 1: src/query_smp.c:195; u"]
    assert [s.name for s in fabric.switches] == ["sw-e41d2d030003e470", "switch-de779e"]
    assert sorted((ca.host, ca.device) for ca in fabric.cas) == [
        ("r-ufm100", "HCA-2"), ("r-ufm101", "HCA-1"), ("r-ufm101", "HCA-2"),
        ("r-ufm111", "HCA-1"), ("r-ufm216", "HCA-2"), ("r-ufm96", "HCA-1")]
    topo = Topology()
    problems = apply_fabric(topo, fabric, at=1.0)
    assert sum("looped back" in p for p in problems) == 3
    assert [p for p in problems if "looped back" not in p] == [
        "ibnetdiscover sees a cable between sw-e41d2d030003e470/p3 and switch-de779e/p1, both "
        "leaf switches: not an uplink, so it was left out"]
    assert sorted(topo.neighbors("switch:switch-de779e", along=frozenset(
        {RelationKind.CONNECTS}))) == [f"link:switch-de779e/p{n}" for n in (2, 3, 6, 8)]
    assert topo.index("ib.guid", "0x0002c9030006ba5a") == "nic:r-ufm101/HCA-2"
