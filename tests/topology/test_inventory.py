"""The inventory file: what small.yaml builds, JSON alike, and every bad file's FILE:LINE errors."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from vigil.topology.graph import Topology
from vigil.topology.inventory import (
    SCHEMA_FILE,
    InventoryError,
    Job,
    inventory_json_schema,
    load_inventory,
    render_inventory_schema,
    validate_inventory,
    write_inventory_schema,
)
from vigil.topology.model import EntityKind, Relation, RelationKind
from vigil.topology.queries import blast_radius, job_placement, peers

DATA = Path(__file__).parent / "data" / "inventory"
SMALL = DATA / "small.yaml"
README = Path(__file__).parents[2] / "topology" / "README.md"

# small.yaml, counted by hand: 2 racks, 3 nodes x (2 GPUs + 2 NICs), 2 spines, 2 leaves.
SMALL_ENTITIES = {
    EntityKind.REGION: 1,
    EntityKind.CLUSTER: 1,
    EntityKind.POWER: 2,  # pdu-a, pdu-b
    EntityKind.SWITCH: 4,  # spine-1, spine-2, leaf-1, leaf-2
    EntityKind.LINK: 10,  # 4 uplinks (2 leaves x 2 spines) + 6 NIC cables
    EntityKind.RACK: 2,
    EntityKind.NODE: 3,
    EntityKind.GPU: 6,
    EntityKind.NIC: 6,
    EntityKind.PARTITION: 2,  # gpu, debug
    EntityKind.STORAGE: 2,  # pfs-1, obj-1
    EntityKind.VOLUME: 3,  # pfs-1/home, pfs-1/scratch, obj-1/checkpoints
    EntityKind.JOB: 1,
    EntityKind.RANK: 4,  # 2 nodes x 2 ranks
}
SMALL_RELATIONS = {
    # region>cluster 1, cluster>rack 2, rack>node 3, node>gpu 6, node>nic 6, storage>volume 3
    RelationKind.CONTAINS: 21,
    RelationKind.DEPENDS_ON: 8,  # rack>power 2, gpu>nic 6
    RelationKind.CONNECTS: 20,  # spine>uplink>leaf 4 x 2, leaf>cable>nic 6 x 2
    RelationKind.MEMBER_OF: 7,  # node>partition 3, rank>job 4
    RelationKind.MOUNTS: 6,  # home by 3 nodes, scratch by 2, the job's checkpoints
    RelationKind.RUNS_ON: 4,  # rank>gpu
}


@pytest.fixture(scope="module")
def small() -> Topology:
    return load_inventory(SMALL)


def _relation_counts(topology: Topology) -> Counter[RelationKind]:
    return Counter(data["kind"] for _, _, data in topology.view().edges(data=True))


def _snapshot(topology: Topology) -> tuple[dict[str, dict[str, str]], set[tuple[str, str, str]]]:
    """Every entity with its attributes, and every relation: enough to compare two loads."""
    entities = {}
    for entity_id in topology.entities():
        entity = topology.entity(entity_id)
        assert entity is not None
        entities[entity_id] = dict(entity.attrs)
    edges = {(src, str(data["kind"]), dst)
             for src, dst, data in topology.view().edges(data=True)}
    return entities, edges


def test_small_inventory_is_valid() -> None:
    assert validate_inventory(SMALL) == []


def test_small_inventory_entity_and_relation_counts(small: Topology) -> None:
    assert {kind: sum(1 for _ in small.entities(kind)) for kind in SMALL_ENTITIES} == \
        SMALL_ENTITIES
    assert len(small) == sum(SMALL_ENTITIES.values()) == 47
    assert dict(_relation_counts(small)) == SMALL_RELATIONS
    assert small.relation_count() == sum(SMALL_RELATIONS.values()) == 66


def test_gpus_depend_on_the_nic_of_their_rail(small: Topology) -> None:
    for node in ("gpu-a-001", "gpu-a-002", "gpu-b-001"):
        for index in (0, 1):
            relation = Relation(f"gpu:{node}/{index}", RelationKind.DEPENDS_ON,
                                f"nic:{node}/mlx5_{index}")
            assert relation in small.relations(f"gpu:{node}/{index}")
    assert Relation("gpu:gpu-a-001/0", RelationKind.DEPENDS_ON, "nic:gpu-a-001/mlx5_1") \
        not in small.relations("gpu:gpu-a-001/0")


def test_racks_depend_on_their_power_feed(small: Topology) -> None:
    assert Relation("rack:a", RelationKind.DEPENDS_ON, "power:pdu-a") in small.relations("rack:a")
    assert Relation("rack:b", RelationKind.DEPENDS_ON, "power:pdu-b") in small.relations("rack:b")
    assert Relation("rack:a", RelationKind.CONTAINS, "node:gpu-a-002") in small.relations("rack:a")


def test_links_are_named_by_switch_and_port_from_the_core_outward(small: Topology) -> None:
    assert set(small.entities(EntityKind.LINK)) == {
        "link:leaf-1/p1", "link:leaf-1/p2", "link:leaf-1/p3",
        "link:leaf-2/p1", "link:leaf-2/p2", "link:leaf-2/p3",
        "link:spine-1/leaf-1", "link:spine-1/leaf-2",
        "link:spine-2/leaf-1", "link:spine-2/leaf-2",
    }
    assert small.relations("link:leaf-2/p3") == [
        Relation("link:leaf-2/p3", RelationKind.CONNECTS, "nic:gpu-b-001/mlx5_1"),
        Relation("switch:leaf-2", RelationKind.CONNECTS, "link:leaf-2/p3"),
    ]
    assert small.relations("link:spine-2/leaf-1") == [
        Relation("link:spine-2/leaf-1", RelationKind.CONNECTS, "switch:leaf-1"),
        Relation("switch:spine-2", RelationKind.CONNECTS, "link:spine-2/leaf-1"),
    ]


def test_attributes_name_hosts_gpus_and_nics(small: Topology) -> None:
    node = small.entity("node:gpu-b-001")
    gpu = small.entity("gpu:gpu-a-001/1")
    counted = small.entity("gpu:gpu-a-002/0")
    nic = small.entity("nic:gpu-a-002/mlx5_1")
    assert node is not None and gpu is not None and counted is not None and nic is not None
    assert dict(node.attrs) == {"host.name": "gpu-b-001"}
    assert dict(gpu.attrs) == {"host.name": "gpu-a-001", "gpu": "1",
                               "UUID": "GPU-7c2d3e5b-9a3d-2e7f-8b6c-1d6e5f4a3b2c",
                               "pci_bus_id": "00000000:2A:00.0"}
    assert dict(counted.attrs) == {"host.name": "gpu-a-002", "gpu": "0"}
    assert dict(nic.attrs) == {"host.name": "gpu-a-002", "ib.device": "mlx5_1", "rail": "1"}
    # ...which the graph's indices use to find the entity a record names.
    assert small.index("host.name", "gpu-b-001") == "node:gpu-b-001"
    assert small.index("UUID", "GPU-3b1e2f4a-8f2c-1d6e-9a7b-0c5d4e3f2a1b") == "gpu:gpu-a-001/0"
    assert small.gpu_by_pci("gpu-a-001", "0000:2a:00.0") == "gpu:gpu-a-001/1"
    assert small.index("ib.device", "gpu-a-002|mlx5_1") == "nic:gpu-a-002/mlx5_1"


def test_partitions_and_mounts(small: Topology) -> None:
    assert Relation("node:gpu-b-001", RelationKind.MEMBER_OF, "partition:debug") \
        in small.relations("node:gpu-b-001")
    def mounters(volume: str) -> set[str]:
        return {r.src for r in small.relations(volume) if r.kind is RelationKind.MOUNTS}

    assert mounters("volume:pfs-1/home") == {"node:gpu-a-001", "node:gpu-a-002", "node:gpu-b-001"}
    assert mounters("volume:pfs-1/scratch") == {"node:gpu-a-001", "node:gpu-a-002"}
    assert small.relations("volume:obj-1/checkpoints") == [
        Relation("storage:obj-1", RelationKind.CONTAINS, "volume:obj-1/checkpoints"),
        Relation("job:llm-8b-run1", RelationKind.MOUNTS, "volume:obj-1/checkpoints"),
    ]


def test_ranks_run_on_gpus_with_megatron_coordinates(small: Topology) -> None:
    job = small.entity("job:llm-8b-run1")
    assert job is not None
    assert dict(job.attrs) == {"world_size": "4", "tensor_parallel": "2",
                               "pipeline_parallel": "1", "data_parallel": "2"}
    expected = {  # rank: (gpu, dp, pp, tp)
        0: ("gpu:gpu-a-001/0", "0", "0", "0"),
        1: ("gpu:gpu-a-001/1", "0", "0", "1"),
        2: ("gpu:gpu-a-002/0", "1", "0", "0"),
        3: ("gpu:gpu-a-002/1", "1", "0", "1"),
    }
    for rank, (gpu, dp, pp, tp) in expected.items():
        rank_id = f"rank:llm-8b-run1/{rank}"
        entity = small.entity(rank_id)
        assert entity is not None
        assert dict(entity.attrs) == {"dp": dp, "pp": pp, "tp": tp}
        assert small.relations(rank_id) == [
            Relation(rank_id, RelationKind.RUNS_ON, gpu),
            Relation(rank_id, RelationKind.MEMBER_OF, "job:llm-8b-run1"),
        ]


def test_queries_follow_what_the_inventory_says(small: Topology) -> None:
    hit = blast_radius(small, "power:pdu-b")
    assert {"rack:b", "node:gpu-b-001", "gpu:gpu-b-001/1", "nic:gpu-b-001/mlx5_0"} <= hit
    assert not any("gpu-a-" in entity for entity in hit)
    assert "rank:llm-8b-run1/2" in blast_radius(small, "link:leaf-1/p2")
    assert job_placement(small, "job:llm-8b-run1") == {
        "node:gpu-a-001": ["rank:llm-8b-run1/0", "rank:llm-8b-run1/1"],
        "node:gpu-a-002": ["rank:llm-8b-run1/2", "rank:llm-8b-run1/3"],
    }
    assert peers(small, "node:gpu-a-001") == ["node:gpu-a-002"]


def test_coordinates_put_tensor_innermost_then_pipeline_then_data() -> None:
    job = Job(name="j", nodes=["a", "b"], ranks_per_node=4, tensor_parallel=2,
              pipeline_parallel=2)
    assert [job.coordinates(rank) for rank in range(job.world_size)] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1),
        (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1),
    ]


def test_json_inventory_loads_identically(tmp_path: Path) -> None:
    as_json = tmp_path / "small.json"
    as_json.write_text(json.dumps(yaml.safe_load(SMALL.read_text()), indent=2))
    assert validate_inventory(as_json) == []
    from_json, from_yaml = _snapshot(load_inventory(as_json)), _snapshot(load_inventory(SMALL))
    assert from_json == from_yaml
    assert len(from_json[0]) == 47 and len(from_json[1]) == 66


def test_json_problems_have_lines_too(tmp_path: Path) -> None:
    data = yaml.safe_load(SMALL.read_text())
    data["racks"][1]["colour"] = "red"
    data["jobs"][0]["nodes"].append("gpu-z-999")
    path = tmp_path / "bad.json"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    lines = text.splitlines()
    colour = next(i for i, line in enumerate(lines, 1) if '"colour"' in line)
    assert validate_inventory(path) == [f"{path}:{colour}: racks[1].colour: unknown key"]
    del data["racks"][1]["colour"]
    text = json.dumps(data, indent=2)
    path.write_text(text)
    lines = text.splitlines()
    unknown = next(i for i, line in enumerate(lines, 1) if '"gpu-z-999"' in line)
    assert validate_inventory(path) == [
        f"{path}:{unknown}: jobs[0].nodes[2]: unknown node 'gpu-z-999'",
    ]


# Each bad file and what it must produce, as LINE: key.path: message.
BAD = {
    "bad_unknown_key.yaml": [
        "7: racks[0].nodes[0].gpus: required key is missing",
        "8: racks[0].nodes[0].gpu: unknown key",
    ],
    "bad_wrong_type.yaml": [
        "6: switches[0].tier: Input should be 'leaf' or 'spine' (got 'core')",
        "11: racks[0].nodes[0].gpus: must be a GPU count or a list of GPUs (got 'eight')",
        "13: racks[0].nodes[0].nics[0].rail: Input should be a valid integer, unable to parse "
        "string as an integer (got 'first')",
    ],
    "bad_unknown_leaf.yaml": [
        "17: racks[0].nodes[0].nics[1].leaf: unknown leaf switch 'leaf-9'",
        "18: racks[0].nodes[0].nics[2].leaf: 'spine-1' is a spine; NICs are cabled to leaves",
    ],
    "bad_duplicate_node.yaml": [
        "16: racks[1].nodes[0].name: duplicate node 'gpu-a-001' (first at line 10)",
        "21: racks[1].nodes[1].nics[0].port: duplicate cable to port 'leaf-1/p1' "
        "(first at line 13)",
    ],
    "bad_unknown_power.yaml": [
        "10: racks[1].power: unknown power feed 'pdu-z'",
    ],
    "bad_job_unknown_node.yaml": [
        "17: jobs[0].nodes[2]: unknown node 'gpu-a-003'",
        "20: jobs[0].volume: unknown volume 'pfs-1/checkpoints'",
    ],
    "bad_job_layout.yaml": [
        "12: jobs[0].ranks_per_node: 'gpu-a-001' has 4 GPUs, fewer than ranks_per_node (6)",
        "12: jobs[0].ranks_per_node: 2 nodes x 6 ranks_per_node = 12 ranks, not a multiple of "
        "tensor_parallel x pipeline_parallel = 8",
    ],
    "bad_uplink.yaml": [
        "7: switches[0].uplinks: only leaf switches have uplinks",
        "10: switches[1].uplinks[1]: unknown spine switch 'spine-2'",
        "10: switches[1].uplinks[2]: 'leaf-2' is a leaf, not a spine",
    ],
}
SYNTAX = DATA / "bad_syntax.yaml"


def test_every_bad_file_has_its_expected_errors() -> None:
    assert sorted(p.name for p in DATA.glob("bad_*.yaml")) == sorted([*BAD, SYNTAX.name])


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_reports_file_line_key_and_message(name: str) -> None:
    path = DATA / name
    expected = [f"{path}:{problem}" for problem in BAD[name]]
    assert validate_inventory(path) == expected
    with pytest.raises(InventoryError) as raised:
        load_inventory(path)
    assert raised.value.problems == expected
    assert str(path) in str(raised.value)


def test_yaml_syntax_errors_name_file_and_line() -> None:
    # The wording is the YAML parser's (libyaml's or PyYAML's); the place is ours.
    problems = validate_inventory(SYNTAX)
    assert len(problems) == 1
    assert problems[0].startswith(f"{SYNTAX}:6: not valid YAML: ")


def test_keys_written_twice_and_files_that_are_not_inventories(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("cluster:\n  name: lab-1\n  name: lab-2\n")
    assert validate_inventory(twice) == [
        f"{twice}:3: cluster.name: key written twice; the last one counts",
    ]
    listing = tmp_path / "list.yaml"
    listing.write_text("- cluster\n")
    assert validate_inventory(listing) == [
        f"{listing}:1: the top level must be a mapping with cluster, racks, ...",
    ]
    missing = tmp_path / "missing.yaml"
    assert validate_inventory(missing) == [f"{missing}: cannot read: No such file or directory"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert validate_inventory(empty) == [
        f"{empty}:1: the top level must be a mapping with cluster, racks, ...",
    ]


def test_schema_file_is_up_to_date() -> None:
    # If this fails after a model change: python -m vigil.topology.inventory
    assert SCHEMA_FILE.read_text() == render_inventory_schema()
    schema = inventory_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["cluster"]
    node = schema["$defs"]["Node"]
    assert node["additionalProperties"] is False
    assert {branch.get("type") for branch in node["properties"]["gpus"]["oneOf"]} == \
        {"integer", "array"}


def test_schema_is_written_where_asked(tmp_path: Path) -> None:
    written = write_inventory_schema(tmp_path / "schema.json")
    assert json.loads(written.read_text()) == inventory_json_schema()


def test_readme_example_is_small_yaml() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks == [SMALL.read_text()]
