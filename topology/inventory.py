"""The inventory file: racks, nodes, fabric, storage and jobs as operators write them down.

An inventory is YAML, or JSON (which is YAML too), checked first by the pydantic models below,
then by `inventory_checks` for what a schema cannot see (names that must be unique, names that
must exist). `validate_inventory` reports every problem as ``FILE:LINE: key.path: message``;
`load_inventory` turns a valid file into a `Topology` (`inventory_build`). topology/README.md
describes the format with an example; `inventory.schema.json` is its JSON Schema, for editors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    Tag,
    ValidationError,
)
from pydantic_core import ErrorDetails
from vigil.topology.graph import Topology
from vigil.topology.inventory_build import build_topology
from vigil.topology.inventory_checks import Loc, Problem, render, semantic_problems

SCHEMA_FILE = Path(__file__).with_name("inventory.schema.json")

# Names become parts of entity ids, which join parts with ':' and '/'.
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MOUNTER = r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]*)$"
VOLUME_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
GPU_UUID = r"^GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
PCI_BUS_ID = r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$"
_PATTERN_HINTS = {
    NAME: "must be a name of letters, digits, '_', '.' and '-' that starts with a letter or digit",
    MOUNTER: "must be a node name or '*' (every node)",
    VOLUME_REF: "must be STORAGE/VOLUME, e.g. pfs-1/home",
    GPU_UUID: "must be a GPU UUID as nvidia-smi prints it (GPU-8hex-4hex-4hex-4hex-12hex)",
    PCI_BUS_ID: "must be a PCI bus id as nvidia-smi prints it (00000000:18:00.0)",
}

Name = Annotated[str, StringConstraints(pattern=NAME, max_length=253)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cluster(_Model):
    """Which cluster this file describes."""

    name: Name
    region: Name | None = Field(None, description="where it runs, e.g. a cloud region or site")


class PowerFeed(_Model):
    """A power distribution unit or feed that racks draw from."""

    name: Name


class Gpu(_Model):
    """One GPU of a node, with the identifiers DCGM and nvidia-smi report."""

    index: NonNegativeInt = Field(description="the CUDA/NVML index: gpu:NODE/INDEX")
    uuid: Annotated[str, StringConstraints(pattern=GPU_UUID)] | None = None
    pci_bus_id: Annotated[str, StringConstraints(pattern=PCI_BUS_ID)] | None = None


def _gpus_form(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "count"
    if isinstance(value, list):
        return "list"
    return None


# A count, or a list of GPUs; a tagged union so that a wrong value gets one error, not two.
Gpus = Annotated[
    Annotated[NonNegativeInt, Tag("count")] | Annotated[list[Gpu], Tag("list")],
    Discriminator(
        _gpus_form,
        custom_error_type="gpus_form",
        custom_error_message="must be a GPU count or a list of GPUs",
    ),
]
GPUS_TAGS = ("count", "list")


class Nic(_Model):
    """An RDMA NIC and the leaf switch port its cable plugs into."""

    name: Name = Field(description="the RDMA device, e.g. mlx5_0")
    rail: NonNegativeInt | None = Field(
        None, description="the rail it serves; GPU k depends on the NIC of rail k"
    )
    leaf: Name = Field(description="the leaf switch it is cabled to")
    port: Name = Field(description="the leaf's port; the cable is link:LEAF/PORT")


class Node(_Model):
    """A host."""

    name: Name = Field(description="its host name")
    gpus: Gpus = Field(description="how many GPUs (indices 0..n-1), or each one")
    nics: list[Nic] = Field(default_factory=list)
    partition: Name | None = Field(None, description="its Slurm partition or node pool")

    def gpu_list(self) -> list[Gpu]:
        """Its GPUs in index order, whichever way the file wrote them."""
        if isinstance(self.gpus, int):
            return [Gpu(index=index) for index in range(self.gpus)]
        return sorted(self.gpus, key=lambda gpu: gpu.index)


class Rack(_Model):
    """A rack of nodes on one power feed."""

    name: Name
    power: Name | None = Field(None, description="the power feed it draws from")
    nodes: list[Node] = Field(default_factory=list)


class Switch(_Model):
    """A fabric switch: leaves take the NICs' cables, spines the leaves' uplinks."""

    name: Name
    tier: Literal["leaf", "spine"]
    uplinks: list[Name] = Field(
        default_factory=list, description="the spines a leaf is cabled to: link:SPINE/LEAF"
    )


class Volume(_Model):
    """A filesystem, export or bucket of a storage system, and who mounts it."""

    name: Name
    mounted_by: list[Annotated[str, StringConstraints(pattern=MOUNTER)]] = Field(
        default_factory=list, description="node names, or '*' for every node"
    )


class Storage(_Model):
    """A shared storage system."""

    name: Name
    type: Literal["lustre", "nfs", "gpfs", "weka", "s3"]
    volumes: list[Volume] = Field(default_factory=list)


class Job(_Model):
    """A training job; its ranks follow Megatron's layout (tensor, then pipeline, then data)."""

    name: Name
    nodes: list[Name] = Field(min_length=1)
    ranks_per_node: PositiveInt = Field(description="ranks on each node, one per GPU")
    tensor_parallel: PositiveInt = 1
    pipeline_parallel: PositiveInt = 1
    volume: Annotated[str, StringConstraints(pattern=VOLUME_REF)] | None = Field(
        None, description="STORAGE/VOLUME it reads and checkpoints to"
    )

    @property
    def world_size(self) -> int:
        return len(self.nodes) * self.ranks_per_node

    def coordinates(self, rank: int) -> tuple[int, int, int]:
        """(data, pipeline, tensor) parallel coordinates of `rank`: tensor-parallel ranks are
        adjacent, pipeline stages next, data-parallel replicas outermost (as Megatron-LM)."""
        tp, pp = self.tensor_parallel, self.pipeline_parallel
        return rank // (tp * pp), (rank // tp) % pp, rank % tp


class Inventory(_Model):
    """A cluster's inventory: what is where, what is cabled to what, who runs where."""

    model_config = ConfigDict(title="Vigil inventory")

    cluster: Cluster
    power: list[PowerFeed] = Field(default_factory=list)
    switches: list[Switch] = Field(default_factory=list)
    racks: list[Rack] = Field(default_factory=list)
    storage: list[Storage] = Field(default_factory=list)
    jobs: list[Job] = Field(default_factory=list)


class InventoryError(Exception):
    """An inventory file that cannot be used; `problems` lists each one with file and line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid inventory:\n  " + "\n  ".join(problems))


def validate_inventory(path: Path | str) -> list[str]:
    """Every problem of the inventory at `path`, each as ``FILE:LINE: key.path: message``."""
    return _parse(Path(path))[1]


def load_inventory(path: Path | str, at: float = 0.0) -> Topology:
    """The topology the inventory at `path` describes, as of time `at`.

    Raises InventoryError, listing every problem, if the file is not a valid inventory.
    """
    return build_topology(read_inventory(path), at=at)


def read_inventory(path: Path | str) -> Inventory:
    """The validated inventory model of the file at `path`; raises InventoryError."""
    inventory, problems = _parse(Path(path))
    if inventory is None or problems:
        raise InventoryError(problems)
    return inventory


def inventory_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the inventory format."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **Inventory.model_json_schema()}


def render_inventory_schema() -> str:
    """The text of inventory.schema.json."""
    return json.dumps(inventory_json_schema(), indent=2) + "\n"


def write_inventory_schema(path: Path = SCHEMA_FILE) -> Path:
    """Regenerate inventory.schema.json (or write the schema to `path`)."""
    path.write_text(render_inventory_schema(), encoding="utf-8")
    return path


# --- reading and describing problems ----------------------------------------------------

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(path: Path) -> tuple[Inventory | None, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc.strerror}"]
    except UnicodeDecodeError as exc:
        return None, [f"{path}: not UTF-8 text: {exc.reason}"]
    is_json = path.suffix.lower() == ".json"
    root: yaml.Node | None = None
    data: Any = None
    try:
        root, data = _compose(text)
    except yaml.YAMLError as exc:
        if not is_json:  # JSON that PyYAML cannot read (tabs, say) still loads, without lines
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            return None, [f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]
    if is_json:  # JSON's own rules for numbers and escapes
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [f"{path}:{exc.lineno}: not valid JSON: {exc.msg}"]
    if not isinstance(data, dict):
        return None, [f"{path}:1: the top level must be a mapping with cluster, racks, ..."]
    problems = _duplicate_keys(root, ())
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        problems += [_problem_of(error) for error in exc.errors()]
        return None, render(path, root, problems)
    problems += semantic_problems(inventory)
    return inventory, render(path, root, problems)


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (which knows lines) and the data it stands for, from one parse."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return root, None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node | None, loc: Loc) -> list[Problem]:
    """Keys written twice in one mapping, which YAML loaders silently resolve to the last."""
    found: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key, str):
                continue
            if key in seen and key != "<<":
                found.append(Problem((*loc, key), "key written twice; the last one counts"))
            seen.add(key)
            found += _duplicate_keys(value_node, (*loc, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, (*loc, index))
    return found


def _problem_of(error: ErrorDetails) -> Problem:
    loc: list[str | int] = []
    for part in error["loc"]:
        if loc and loc[-1] == "gpus" and part in GPUS_TAGS:
            continue  # the tagged union's branch name, not a key in the file
        loc.append(part)
    kind = error["type"]
    got = repr(error.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        message = f"{_PATTERN_HINTS.get(pattern, error['msg'])} (got {got})"
    else:
        message = f"{error['msg']} (got {got})"
    return Problem(tuple(loc), message)


if __name__ == "__main__":  # python -m vigil.topology.inventory regenerates the schema file
    print(write_inventory_schema())
