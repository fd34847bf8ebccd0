"""Fabric loaders: the cabling that ibnetdiscover and LLDP see, checked against the topology.

`parse_ibnetdiscover` reads ``ibnetdiscover`` output (rdma-core), `parse_lldpctl_json` reads
``lldpctl -f json`` (lldpd). `apply_fabric` and `apply_lldp` add what was seen under the
inventory's ids (topology/README.md) and return each conflict with what the topology held, as a
sentence for operators: ``nic:gpu-a-001/mlx5_1 is cabled to leaf-2/p3 per ibnetdiscover, but the
inventory says leaf-1/p3``. The observation wins; what the topology did not know is added
quietly; a link that is down is reported but kept (its cable is likely still there). Switches
are named as `switch_name` says; HCAs are described ``HOST DEVICE`` (rdma-ndd's default), and
other CAs (a switch's SHARP aggregation node) are parsed but not applied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, RelationKind, entity_id, kind_of, owner_of

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # the inventory's names
_CONNECTS: Final = frozenset({RelationKind.CONNECTS})
_GUID: Final = r"[0-9a-fA-F]{16}"
# The line formats of rdma-core's infiniband-diags/ibnetdiscover.c (out_switch, out_ca,
# out_switch_port, out_ca_port); `-g` adds chassis lines and "[ext N]" port suffixes.
_SKIPPED: Final = re.compile(
    r"(vendid|devid|sysimgguid|switchguid|caguid|rtguid)=|Chassis\b|Non-Chassis Nodes|Hostname:")
_SWITCH: Final = re.compile(
    rf'Switch\s+(?P<ports>\d+)\s+"S-(?P<guid>{_GUID})"\s*#\s*"(?P<desc>.*)"\s+'
    r"(?:base|enhanced)\s+port\s+0\s+lid\s+(?P<lid>\d+)\b.*")
_CA: Final = re.compile(
    rf'(?P<type>Ca|Rt)\s+(?P<ports>\d+)\s+"[HR]-(?P<guid>{_GUID})"\s*#\s*"(?P<desc>.*)".*')
_PORT: Final = re.compile(
    r"\[(?P<port>\d+)\](?:\[ext \d+\])?(?:\([0-9a-fA-F]+\))?\s*"
    rf'"(?P<kind>[SHR])-(?P<guid>{_GUID})"\[(?P<rport>\d+)\](?:\[ext \d+\])?'
    r"\s*(?:\([0-9a-fA-F]+\))?\s*#(?P<comment>.*)")
_DIAGNOSTIC: Final = re.compile(  # libibmad's stderr lines: "src/query_smp.c:195; ...", "ibwarn:"
    r"[\w./-]+\.c:\d+;|ib\w*: ?(?:iberror|ibwarn|ibdebug)|ibwarn:|iberror:")
_NVIDIA_DESCRIPTION: Final = re.compile(r"MF0;(?P<name>[^:;]+):")
_NUMBERED_PORT: Final = re.compile(r"[A-Za-z_-]*(?:1/)?(\d+)")  # swp3, Ethernet3, Eth1/3


@dataclass(frozen=True, slots=True)
class FabricSwitch:
    """A switch as ibnetdiscover saw it; `name` is what the topology calls it."""

    guid: str  # the node GUID as 0x and 16 hex digits
    description: str
    name: str
    ports: int  # 0 when only a neighbour's port line mentioned it
    lid: int | None = None


@dataclass(frozen=True, slots=True)
class FabricCa:
    """A channel adapter; `host` and `device` come from its description when it has them."""

    guid: str
    description: str
    host: str | None
    device: str | None
    ports: int


@dataclass(frozen=True, slots=True)
class Cable:
    """One cable, from a switch port to a port of another switch or of a CA."""

    switch_guid: str
    switch_port: int
    remote_guid: str
    remote_port: int


@dataclass(frozen=True, slots=True)
class Fabric:
    """What one ibnetdiscover run saw: switches and CAs in output order, each cable once."""

    switches: tuple[FabricSwitch, ...]
    cas: tuple[FabricCa, ...]
    cables: tuple[Cable, ...]
    # libibmad's complaints (a port that timed out) when stderr was captured with stdout:
    # the discovery went on past them, so the rest of the output is still good.
    diagnostics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One LLDP neighbour of a host interface: the switch and port at the cable's far end."""

    interface: str
    chassis_name: str | None
    chassis_id: str | None
    port_id: str | None
    port_id_type: str | None  # lldpd's subtype: ifname, local, mac, ...
    port_description: str | None


def switch_name(description: str, guid: str) -> str:
    """What the topology calls a switch: the host name in an NVIDIA NodeDescription
    (``MF0;leaf-1:MQM9700/U1``) or a bare name (``--node-name-map`` makes those), else sw-GUID."""
    match = _NVIDIA_DESCRIPTION.match(description.strip())
    name = match["name"] if match else description.strip()
    return name if _NAME.fullmatch(name) else f"sw-{guid.removeprefix('0x')}"


def _host_device(description: str) -> tuple[str | None, str | None]:
    parts = description.split()
    named = len(parts) == 2 and all(_NAME.fullmatch(part) for part in parts)
    return (parts[0], parts[1]) if named else (None, None)


def parse_ibnetdiscover(text: str) -> Fabric:
    """The switches, CAs and cables in ``ibnetdiscover`` output; ValueError names the line."""
    declared: dict[str, int] = {}  # node GUID -> line of its Switch/Ca/Rt line
    nodes: dict[str, tuple[str, str, int, int | None]] = {}  # GUID -> (S/H/R, desc, ports, lid)
    peers: dict[tuple[str, int], tuple[tuple[str, int], int]] = {}  # end -> (other end, line)
    cables: dict[frozenset[tuple[str, int]], Cable] = {}
    current: tuple[str, str, int] | None = None  # (S/H/R, GUID, port count)
    diagnostics: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or _SKIPPED.match(line):
            continue
        if _DIAGNOSTIC.match(line):
            diagnostics.append(f"line {number}: {line}")
            continue
        if (match := _SWITCH.fullmatch(line) or _CA.fullmatch(line)) is not None:
            guid, ports, desc = f"0x{match['guid'].lower()}", int(match["ports"]), match["desc"]
            if declared.setdefault(guid, number) != number:
                raise ValueError(f"line {number}: node {guid} is also on line {declared[guid]}")
            kind = "S" if "lid" in match.groupdict() else "H" if match["type"] == "Ca" else "R"
            nodes[guid] = (kind, desc, ports, int(match["lid"]) if kind == "S" else None)
            current = (kind, guid, ports)
            continue
        if (match := _PORT.fullmatch(line)) is None:
            raise ValueError(f"line {number}: not a line of ibnetdiscover output: {line[:80]!r}")
        if current is None:
            raise ValueError(f"line {number}: a port line before any Switch or Ca line")
        kind, guid, ports = current
        port, remote_port = int(match["port"]), int(match["rport"])
        if not 1 <= port <= ports:
            raise ValueError(f"line {number}: port {port} of node {guid}, which has {ports} ports")
        remote = f"0x{match['guid'].lower()}"
        quoted = re.search(r'"(.*)"', match["comment"])
        # A node only a port line names (a partial dump) still counts, as its neighbour saw it.
        nodes.setdefault(remote, (match["kind"], quoted[1] if quoted else "", 0, None))
        here, there = (guid, port), (remote, remote_port)
        for end, other in ((here, there), (there, here)):
            known = peers.setdefault(end, (other, number))
            if known[0] != other:
                raise ValueError(f"line {number}: {end[0]} port {end[1]} is cabled to {other} "
                                 f"here, but to {known[0]} on line {known[1]}")
        if "S" in (kind, match["kind"]):  # a cable between two CAs has no switch port
            cables.setdefault(frozenset((here, there)), Cable(guid, port, remote, remote_port)
                              if kind == "S" else Cable(remote, remote_port, guid, port))
    switches, cas = [], []
    for guid in dict.fromkeys([*declared, *nodes]):  # in output order
        kind, desc, ports, lid = nodes[guid]
        if kind == "S":
            switches.append(FabricSwitch(guid, desc, switch_name(desc, guid), ports, lid))
        elif kind == "H":
            cas.append(FabricCa(guid, desc, *_host_device(desc), ports))
    return Fabric(tuple(switches), tuple(cas), tuple(cables.values()), tuple(diagnostics))


def parse_lldpctl_json(text: str) -> list[Neighbor]:
    """The neighbours in ``lldpctl -f json`` output, one per interface and neighbour."""
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno}: not JSON: {exc.msg}") from None
    lldp = document.get("lldp") if isinstance(document, dict) else None
    if not isinstance(lldp, dict):
        raise ValueError('line 1: expected {"lldp": {...}} as `lldpctl -f json` prints it '
                         "(-f json0 is not supported)")
    # lldpd unwraps one-element lists: one interface is an object, several a list of them.
    interfaces = lldp.get("interface", [])
    entries = [interfaces] if isinstance(interfaces, dict) else interfaces
    if not isinstance(entries, list):
        raise ValueError("lldp.interface: expected an object or a list of objects")
    found: list[Neighbor] = []
    for index, entry in enumerate(entries):
        for name, body in _object(entry, f"lldp.interface[{index}]").items():
            path = f"lldp.interface[{index}].{name}"
            chassis = _object(_object(body, path).get("chassis", {}), f"{path}.chassis")
            system: str | None = None
            if len(chassis) == 1 and "id" not in chassis:  # lldpd makes the SysName a key
                system, inner = next(iter(chassis.items()))
                chassis = _object(inner, f"{path}.chassis.{system}")
            port = _object(body.get("port", {}), f"{path}.port")
            found.append(Neighbor(name, system, _typed_id(chassis.get("id"))[0],
                                  *_typed_id(port.get("id")), _text(port.get("descr"))))
    return found


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected an object, got {type(value).__name__}")
    return value


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _typed_id(value: Any) -> tuple[str | None, str | None]:
    typed = isinstance(value, dict)
    return (_text(value.get("value")), _text(value.get("type"))) if typed else (_text(value), None)


def _name(entity: str) -> str:
    return entity.partition(":")[2]


def _known_name(topo: Topology, kind: EntityKind, name: str) -> str:
    """`name`, or its first label where only that is known (``leaf-2.example.net``)."""
    short = name.split(".", 1)[0]
    moved = short and not topo.exists(entity_id(kind, name)) and topo.exists(entity_id(kind, short))
    return short if moved else name


def _connected(topo: Topology, entity: str, kind: EntityKind, outward: bool = True) -> list[str]:
    """What `entity` connects to away from the core (or, not `outward`, from it) of `kind`."""
    along, against = (_CONNECTS, frozenset()) if outward else (frozenset(), _CONNECTS)
    found = topo.neighbors(entity, along, against) if topo.exists(entity) else []
    return [x for x in found if kind_of(x) is kind]


def _upsert(topo: Topology, entity: str, attrs: Mapping[str, str], at: float) -> None:
    current = topo.entity(entity)
    merged = {**current.attrs, **attrs} if current is not None else dict(attrs)
    if current is None or merged != dict(current.attrs):
        topo.add_entity(entity, merged, at)


def _guid_change(topo: Topology, entity: str, guid: str | None, source: str) -> list[str]:
    old = topo.attr(entity, "ib.guid") if topo.exists(entity) else None
    return [] if old is None or guid is None or old == guid else [
        f"{entity} has GUID {old} in the inventory, but {source} sees {guid} (replaced?)"]


@dataclass(slots=True)
class _NicCables:
    """Cables seen to NICs: judged against the topology as it was, then written into it."""

    topo: Topology
    at: float
    source: str
    report_unknown_nics: bool  # the inventory lists every RDMA NIC, but not every Ethernet one
    seen: dict[str, dict[str, str]] = field(default_factory=dict)  # NIC -> {link: switch}
    at_link: dict[str, set[str]] = field(default_factory=dict)  # link -> NICs seen on it
    attrs: dict[str, dict[str, str]] = field(default_factory=dict)

    def see(self, switch: str, link: str, nic: str, attrs: dict[str, str]) -> None:
        self.seen.setdefault(nic, {})[link] = switch
        self.at_link.setdefault(link, set()).add(nic)
        self.attrs[nic] = attrs

    def problems(self) -> list[str]:
        topo, found = self.topo, []
        for nic, links in self.seen.items():
            before = _connected(topo, nic, EntityKind.LINK, outward=False)
            node = entity_id(EntityKind.NODE, owner_of(nic))
            unknown = self.report_unknown_nics and not topo.exists(nic) and topo.exists(node)
            found += _guid_change(topo, nic, self.attrs[nic].get("ib.guid"), self.source)
            for link in links:
                parts = [f"the inventory lists no such NIC on {node}"] if unknown else []
                if before and link not in before:
                    parts.append("the inventory says " + " and ".join(map(_name, before)))
                others = [x for x in _connected(topo, link, EntityKind.NIC) if x != nic]
                if others:
                    parts.append(f"the inventory has {' and '.join(others)} there")
                if parts:
                    found.append(f"{nic} is cabled to {_name(link)} per {self.source}, but "
                                 + "; ".join(parts))
        return found

    def apply(self) -> None:
        topo, at = self.topo, self.at
        for nic, links in self.seen.items():
            node = entity_id(EntityKind.NODE, owner_of(nic))
            _upsert(topo, node, {"host.name": owner_of(nic)}, at)
            _upsert(topo, nic, self.attrs[nic], at)
            topo.add_relation(node, RelationKind.CONTAINS, nic, at)  # a no-op if it is there
            for old in _connected(topo, nic, EntityKind.LINK, outward=False):
                if old not in links:
                    topo.remove_relation(old, nic, at)
            for link, switch in links.items():
                _upsert(topo, link, {}, at)
                topo.add_relation(switch, RelationKind.CONNECTS, link, at)
                for other in _connected(topo, link, EntityKind.NIC):
                    if other not in self.at_link[link]:  # one port holds one cable
                        topo.remove_relation(link, other, at)
                topo.add_relation(link, RelationKind.CONNECTS, nic, at)


def apply_fabric(topo: Topology, fabric: Fabric, at: float) -> list[str]:
    """Add what `fabric` saw to `topo` at `at`, correcting the cabling it disagrees with, and
    return each disagreement with what `topo` held before, as a sentence for an operator."""
    cas = {ca.guid: ca for ca in fabric.cas}
    ids: dict[str, str] = {}
    for switch in fabric.switches:
        found = topo.index("ib.guid", switch.guid)
        ids[switch.guid] = found if found is not None and kind_of(found) is EntityKind.SWITCH \
            else entity_id(EntityKind.SWITCH, _known_name(topo, EntityKind.SWITCH, switch.name))
    known = [sid for sid in dict.fromkeys(ids.values()) if topo.exists(sid)]
    with_hosts = {c.switch_guid for c in fabric.cables
                  if c.remote_guid in cas and cas[c.remote_guid].host is not None}
    tiers = {guid: topo.attr(sid, "tier") or ("leaf" if guid in with_hosts else "spine")
             for guid, sid in ids.items()}
    problems = [p for s in fabric.switches
                for p in _guid_change(topo, ids[s.guid], s.guid, "ibnetdiscover")]
    nics = _NicCables(topo, at, "ibnetdiscover", report_unknown_nics=True)
    uplinks: dict[str, tuple[str, str, str]] = {}  # link -> (spine, leaf, its first cable)
    for cable in fabric.cables:
        sid, ca = ids[cable.switch_guid], cas.get(cable.remote_guid)
        if cable.remote_guid in ids:
            problems += _uplink(uplinks, cable, ids, tiers)
        elif ca is not None and ca.host is not None and ca.device is not None:
            host = _known_name(topo, EntityKind.NODE, ca.host)
            nics.see(sid, entity_id(EntityKind.LINK, _name(sid), f"p{cable.switch_port}"),
                     entity_id(EntityKind.NIC, host, ca.device),
                     {"host.name": host, "ib.device": ca.device, "ib.guid": ca.guid})
    problems += nics.problems() + _unseen(topo, known, nics, uplinks)
    for switch in fabric.switches:  # an inventory tier is kept: `tiers` starts from it
        _upsert(topo, ids[switch.guid], {"tier": tiers[switch.guid], "ib.guid": switch.guid}, at)
    nics.apply()
    for link, (spine, leaf, _) in uplinks.items():
        _upsert(topo, link, {}, at)
        topo.add_relation(spine, RelationKind.CONNECTS, link, at)
        topo.add_relation(link, RelationKind.CONNECTS, leaf, at)
    return problems


def _uplink(uplinks: dict[str, tuple[str, str, str]], cable: Cable, ids: Mapping[str, str],
            tiers: Mapping[str, str]) -> list[str]:
    """Note a switch-to-switch cable as the uplink of its leaf, ``link:SPINE/LEAF``."""
    one, other = ids[cable.switch_guid], ids[cable.remote_guid]
    tier, other_tier = tiers[cable.switch_guid], tiers[cable.remote_guid]
    ends = f"{_name(one)}/p{cable.switch_port} and {_name(other)}/p{cable.remote_port}"
    if one == other:  # SwitchIB firmware reports internal port pairs this way, as do plugs
        return [f"ibnetdiscover sees {_name(one)} port {cable.switch_port} looped back to its "
                f"port {cable.remote_port}: no link to another switch, left out"]
    if tier == other_tier:
        return [f"ibnetdiscover sees a cable between {ends}, both {tier} switches: not an "
                "uplink, so it was left out"]
    spine, leaf = (one, other) if tier == "spine" else (other, one)
    uplinks.setdefault(entity_id(EntityKind.LINK, _name(spine), _name(leaf)), (spine, leaf, ends))
    return []


def _unseen(topo: Topology, known: list[str], nics: _NicCables,
            uplinks: Mapping[str, tuple[str, str, str]]) -> list[str]:
    """Uplinks only one side has, and inventory cables on switches seen that carry nothing."""
    found = [f"ibnetdiscover sees a cable between {ends}, but the inventory has no uplink {link}"
             for link, (spine, leaf, ends) in uplinks.items()
             if spine in known and leaf in known and not topo.exists(link)]
    for switch in known:
        for link in _connected(topo, switch, EntityKind.LINK):
            for nic in _connected(topo, link, EntityKind.NIC):
                if nic not in nics.seen and link not in nics.at_link:
                    found.append(f"{nic} is cabled to {_name(link)} in the inventory, but "
                                 "ibnetdiscover sees nothing there (down or unplugged)")
            for leaf in _connected(topo, link, EntityKind.SWITCH):
                if leaf in known and link not in uplinks:
                    found.append(f"{link} is in the inventory, but ibnetdiscover sees no cable "
                                 f"between {_name(switch)} and {_name(leaf)}")
    return found


def lldp_port_name(neighbor: Neighbor) -> str | None:
    """The inventory's name for a neighbour's port: ``p3`` for ``swp3``, ``Ethernet3``, ``Eth1/3``,
    else the id with ``_`` for what ids cannot hold; a MAC port id defers to the description."""
    text = neighbor.port_description if neighbor.port_id_type == "mac" else neighbor.port_id
    if text is None:
        return None
    match = _NUMBERED_PORT.fullmatch(text)
    if match:
        return f"p{int(match[1])}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or None


def apply_lldp(topo: Topology, host: str, neighbors: Iterable[Neighbor], at: float, *,
               rdma_devices: Mapping[str, str] | None = None) -> list[str]:
    """Add the cables `host`'s LLDP neighbours reveal to `topo` at `at`, correcting those it
    disagrees with; return each disagreement as a sentence for an operator. `rdma_devices`
    (ibdev2netdev's ``ens1f0np0 -> mlx5_0``) lets a RoCE interface find its inventory NIC;
    others are NICs of their own name. Neighbours without a system name or port are skipped."""
    host = _known_name(topo, EntityKind.NODE, host)
    devices = rdma_devices or {}
    nics = _NicCables(topo, at, "LLDP", report_unknown_nics=False)
    for neighbor in neighbors:
        port = lldp_port_name(neighbor)
        name = _known_name(topo, EntityKind.SWITCH, neighbor.chassis_name or "")
        if port is None or not _NAME.fullmatch(name):
            continue
        device = devices.get(neighbor.interface, neighbor.interface)
        attrs = {"host.name": host, "network.interface.name": neighbor.interface} | (
            {"ib.device": device} if neighbor.interface in devices else {})
        nics.see(entity_id(EntityKind.SWITCH, name), entity_id(EntityKind.LINK, name, port),
                 entity_id(EntityKind.NIC, host, device), attrs)
    problems = nics.problems()
    for switch in {s: None for links in nics.seen.values() for s in links.values()}:
        if not topo.exists(switch):  # a switch hosts are cabled to is a leaf
            topo.add_entity(switch, {"tier": "leaf"}, at)
    nics.apply()
    return problems
