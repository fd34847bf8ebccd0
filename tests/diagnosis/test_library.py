"""Tests for the fault-mode library: the shipped modes are consistent, bad files are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
import vigil.diagnosis.library as library_module
from pydantic import ValidationError
from vigil.diagnosis.library import (
    EXAMPLE_FIELDS,
    EXAMPLE_VALUES,
    FaultLibrary,
    FaultMode,
    Layer,
    LibraryError,
    MetricSignal,
    load_library,
    schema,
)
from vigil.diagnosis.log_match import consistency_problems

from vigil.records import Severity

LIBRARIES = Path(__file__).parent / "data" / "libraries"
SHIPPED = load_library()  # for parametrize ids; tests use the `library` fixture
FILL = EXAMPLE_VALUES  # a value for every placeholder an example may use
PLAYBOOKS = {"notify", "container.restart", "job.restart_without_node", "node.drain_and_reset",
             "network.port_disable", "storage.failover"}
KERNEL_PREFIX = "2024-06-10T06:13:20.500000+00:00 n1 kernel: "  # where the lines really appear


def _matching_modes(library: FaultLibrary, line: str) -> list[str]:
    """Ids of the modes with a log signal that matches `line`, as the rule detector tests it."""
    return [mode.id for mode in library for signal in mode.signals.logs
            if signal.contains in line and signal.regex.search(line)]


def test_shipped_library_loads_every_layer_of_fault(library: FaultLibrary) -> None:
    assert {"gpu.xid.48", "gpu.xid.79", "gpu.xid.92", "host.oom_kill", "job.nccl.timeout"} <= set(
        library.ids
    )
    assert library.ids == sorted(m.id for m in library)
    assert len(library) == len(library.ids)
    assert {m.layer for m in library} >= {"compute", "memory", "interconnect", "host", "job"}
    assert {"net.ib.link_down", "storage.nfs.not_responding", "sched.slurm.node_not_responding",
            "job.cuda_oom", "gpu.thermal_throttle"} <= set(library.ids)
    gpu_79 = library.get("gpu.xid.79")
    assert (gpu_79.xid, gpu_79.severity, gpu_79.component) == (79, Severity.CRITICAL, "gpu")
    assert gpu_79.downstream == ["job.nccl.timeout"]


def test_every_layer_has_a_mode(library: FaultLibrary) -> None:
    assert {m.layer for m in library} == set(get_args(Layer))


def test_every_shipped_mode_has_a_signal_and_a_known_playbook(library: FaultLibrary) -> None:
    assert [m.id for m in library if not (m.signals.logs or m.signals.metrics)] == []
    assert {m.playbook for m in library} <= PLAYBOOKS


def test_every_shipped_mode_cites_sources_and_causes(library: FaultLibrary) -> None:
    for mode in library:
        assert mode.references, f"{mode.id} cites no source"
        assert mode.likely_causes, f"{mode.id} names no likely cause"


def test_shipped_xid_modes_are_named_after_their_xid(library: FaultLibrary) -> None:
    for mode in library:
        if mode.xid is not None:
            assert mode.id == f"gpu.xid.{mode.xid}"
            assert f"(Xid {mode.xid})" in mode.title


def test_every_shipped_mode_with_a_log_signal_has_an_example(library: FaultLibrary) -> None:
    # Without an example the consistency check below cannot cover the signal (nor can the
    # simulator inject it).
    assert [m.id for m in library if m.signals.logs and m.example is None] == []


@pytest.mark.parametrize(
    "mode", [m for m in SHIPPED if m.example is not None], ids=lambda m: m.id
)
def test_example_matches_its_own_signal_and_no_other(
    library: FaultLibrary, mode: FaultMode
) -> None:
    assert mode.example is not None
    line = mode.example.format(**FILL)

    assert _matching_modes(library, line) == [mode.id]
    assert _matching_modes(library, KERNEL_PREFIX + line) == [mode.id]


@pytest.mark.parametrize(
    "mode", [m for m in SHIPPED if m.near_miss], ids=lambda m: m.id
)
def test_near_misses_do_not_raise_their_mode(library: FaultLibrary, mode: FaultMode) -> None:
    for template in mode.near_miss:
        line = template.format(**FILL)
        assert mode.id not in _matching_modes(library, line), line
        assert mode.id not in _matching_modes(library, KERNEL_PREFIX + line), line


def test_the_library_has_300_modes_each_with_a_near_miss(library: FaultLibrary) -> None:
    assert len(library) >= 300
    assert [m.id for m in library if m.signals.logs and not m.near_miss] == []


def test_the_shipped_library_is_consistent() -> None:
    assert consistency_problems(SHIPPED) == []


def test_schema_file_is_the_models_schema() -> None:
    shipped = json.loads((Path(library_module.__file__).parent / "faults" / "schema.json")
                         .read_text())
    assert shipped == schema(), "regenerate: vigil faults schema > diagnosis/faults/schema.json"


def test_the_fill_in_values_cover_every_placeholder() -> None:
    assert set(FILL) == EXAMPLE_FIELDS


@pytest.mark.parametrize(
    "mode", [m for m in SHIPPED if m.example is not None], ids=lambda m: m.id
)
def test_example_evidence_is_the_value_filled_in(mode: FaultMode) -> None:
    # A named group that shares a placeholder's name must capture exactly what was filled in.
    assert mode.example is not None
    line = mode.example.format(**FILL)

    (match,) = [m for s in mode.signals.logs if (m := s.regex.search(line))]
    for name, value in match.groupdict().items():
        if name in FILL and "{" + name + "}" in mode.example:
            assert value == str(FILL[name]), name


@pytest.mark.parametrize(
    ("fault_id", "groups"),
    [
        ("net.ib.link_down", {"nic_pci", "netdev"}),
        ("storage.nfs.not_responding", {"storage"}),
        ("sched.slurm.node_not_responding", {"node"}),
        ("sched.slurm.node_down", {"node"}),
        ("job.cuda_oom", {"rank", "gpu"}),
        ("job.loss_nan", {"rank", "node", "gpu", "iteration"}),
        ("job.dataloader_stall", {"pid"}),
    ],
)
def test_new_log_signals_name_the_entity_at_fault(
    library: FaultLibrary, fault_id: str, groups: set[str]
) -> None:
    mode = library.get(fault_id)
    assert mode.example is not None
    line = mode.example.format(**FILL)

    (match,) = [m for s in mode.signals.logs if (m := s.regex.search(line))]
    assert groups <= {k for k, v in match.groupdict().items() if v is not None}


@pytest.mark.parametrize(
    ("line", "fault_id", "evidence"),
    [
        # Shapes these messages also take: soft mounts, hostlists, older releases, more pids.
        ("nfs: server 10.2.80.41 not responding, timed out", "storage.nfs.not_responding",
         {"storage": "10.2.80.41", "state": "timed out"}),
        ("[2015-10-13T20:13:00.675] error: Nodes node-cpu4-1 not responding",
         "sched.slurm.node_not_responding", {"node": "node-cpu4-1"}),
        ("error: Nodes q2-st-t2large-[1-2] not responding, setting DOWN", "sched.slurm.node_down",
         {"node": "q2-st-t2large-[1-2]"}),
        ("Mar 27 15:37:34 cc1 kernel: mlx5_core 0000:01:00.1 eth1: Link down",
         "net.ib.link_down", {"nic_pci": "0000:01:00.1", "netdev": "eth1"}),
        ("RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total "
         "capacity; 14.21 GiB already allocated; 3.19 MiB free; 14.42 GiB reserved in total by "
         "PyTorch)", "job.cuda_oom", {"gpu": "0", "size": "20.00 MiB"}),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a "
         "total capacity of 14.57 GiB of which 1.58 GiB is free.", "job.cuda_oom",
         {"gpu": "0", "size": "1.95 GiB"}),
        ("AssertionError: Rank 12: found NaN in local forward loss calculation. Device: 4, node: "
         "gpu-a-007", "job.loss_nan", {"rank": "12", "gpu": "4", "node": "gpu-a-007"}),
        ("RuntimeError: DataLoader worker (pid 9833) is killed by signal: Killed. ",
         "job.dataloader_stall", {"pid": "9833", "what": "is killed by signal: Killed"}),
        ("RuntimeError: DataLoader worker (pid(s) 8948, 8988, 7844, 8940) exited unexpectedly",
         "job.dataloader_stall", {"pid": "8948"}),
        ("RuntimeError: DataLoader timed out after 600 seconds", "job.dataloader_stall",
         {"secs": "600"}),
    ],
)
def test_real_variants_of_the_new_log_lines_match_their_mode(
    library: FaultLibrary, line: str, fault_id: str, evidence: dict[str, str]
) -> None:
    assert _matching_modes(library, line) == [fault_id]
    (match,) = [m for s in library.get(fault_id).signals.logs if (m := s.regex.search(line))]
    assert evidence.items() <= match.groupdict().items()


@pytest.mark.parametrize(
    "line",
    [
        "mlx5_core 0000:5e:00.0: Port module event: module 0, Cable plugged",
        "mlx5_core 0000:01:00.1 eth1: Link up",
        "nfs: server nfs-01 OK",
        "error: Node n1 has low real_memory size (1000 < 2000)",
        "Out of memory: Killed process 1234 (python) total-vm:1kB",  # the host OOM killer's own
    ],
)
def test_neighbouring_lines_do_not_match_the_new_modes(library: FaultLibrary, line: str) -> None:
    new = {"net.ib.link_down", "storage.nfs.not_responding", "sched.slurm.node_not_responding",
           "sched.slurm.node_down", "job.cuda_oom", "job.loss_nan", "job.dataloader_stall"}
    assert not new & set(_matching_modes(library, line))


@pytest.mark.parametrize(
    "mode", [m for m in SHIPPED if m.xid is not None and m.example], ids=lambda m: m.id
)
def test_xid_example_yields_the_pci_address_as_evidence(mode: FaultMode) -> None:
    assert mode.example is not None
    line = mode.example.format(**FILL)

    (match,) = [m for s in mode.signals.logs if (m := s.regex.search(line))]
    assert match.group("pci") == "0000:3b:00"


@pytest.mark.parametrize("xid", [1, 130, 790, 480])
def test_xid_signals_do_not_match_other_xids_that_share_digits(
    library: FaultLibrary, xid: int
) -> None:
    line = f"NVRM: Xid (PCI:0000:3b:00): {xid}, pid=1234, name=python, something"

    assert _matching_modes(library, line) == []


def test_by_xid(library: FaultLibrary) -> None:
    xid_79 = library.by_xid(79)
    xid_48 = library.by_xid(48)
    assert xid_79 is not None and xid_79.id == "gpu.xid.79"
    assert xid_48 is not None and xid_48.id == "gpu.xid.48"
    assert library.by_xid(999) is None
    for mode in library:  # one mode per Xid, or by_xid would hide one
        if mode.xid is not None:
            assert library.by_xid(mode.xid) == mode


def test_get_and_contains(library: FaultLibrary) -> None:
    assert "gpu.xid.79" in library
    assert "gpu.xid.999" not in library
    with pytest.raises(KeyError, match=r"unknown fault mode 'gpu\.xid\.999'"):
        library.get("gpu.xid.999")


def test_downstream_may_name_a_mode_from_another_file() -> None:
    library = load_library(LIBRARIES / "across_files")

    assert library.ids == ["test.alpha", "test.beta"]
    assert library.get("test.alpha").downstream == ["test.beta"]


@pytest.mark.parametrize(
    ("folder", "fragments"),
    [
        ("duplicate_id", ["b_second.yaml: ", "'test.alpha'", "already defined in a_first.yaml"]),
        ("duplicate_in_one_file", ["modes.yaml: ", "'test.alpha'", "already defined"]),
        ("bad_regex", ["bad_regex.yaml: ", "mode 'test.alpha' field signals.logs.0.pattern",
                       "not a valid regex"]),
        ("unknown_key", ["unknown_key.yaml: ", "mode 'test.alpha' field severity_level",
                         "Extra inputs"]),
        ("unknown_downstream", ["b_causes.yaml: ", "test.beta", "['test.gamma']"]),
        ("not_yaml", ["broken.yaml: ", "not valid YAML"]),
        ("no_signals", ["no_signals.yaml: ", "mode 'test.alpha'", "at least one signal"]),
        ("bad_condition", ["bad_condition.yaml: ", "field signals.metrics.0.condition",
                           "'peer_outlier'"]),
        ("no_threshold", ["no_threshold.yaml: ", "field signals.metrics.0", "needs a threshold"]),
        ("log_without_example", ["no_example.yaml: ", "mode 'test.alpha'",
                                 "needs an example log line"]),
        ("unknown_placeholder", ["placeholder.yaml: ", "mode 'test.alpha' field example",
                                 "['gpu_uuid']"]),
    ],
)
def test_a_bad_library_file_is_refused_naming_the_file(folder: str, fragments: list[str]) -> None:
    with pytest.raises(LibraryError) as raised:
        load_library(LIBRARIES / folder)

    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message
    assert message.startswith(fragments[0])


def test_library_built_directly_also_refuses_duplicates_and_unknown_downstream(
    library: FaultLibrary,
) -> None:
    xid_79 = library.get("gpu.xid.79")

    with pytest.raises(LibraryError, match=r"'gpu\.xid\.79' is defined twice"):
        FaultLibrary([xid_79, xid_79])
    with pytest.raises(LibraryError, match=r"gpu\.xid\.79: downstream names unknown modes"):
        FaultLibrary([xid_79])  # its downstream job.nccl.timeout is missing


def _metric(**fields: Any) -> MetricSignal:
    return MetricSignal.model_validate({"metric": "DCGM_FI_DEV_GPU_TEMP", **fields})


def test_metric_signal_defaults_and_fields() -> None:
    signal = _metric(condition="above", threshold=87, for_s=60, description="hot")

    assert (signal.metric, signal.condition, signal.threshold, signal.for_s) == (
        "DCGM_FI_DEV_GPU_TEMP", "above", 87.0, 60.0,
    )
    assert _metric(condition="absent").for_s == 0
    assert _metric(condition="peer_outlier").threshold is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"condition": "rising", "threshold": 1}, "condition"),
        ({"condition": "above"}, "needs a threshold"),
        ({"condition": "increase"}, "needs a threshold"),
        ({"condition": "absent", "threshold": 0}, "takes no threshold"),
        ({"condition": "above", "threshold": 1, "for_s": -5}, "for_s"),
        ({"condition": "above", "threshold": 1, "metric": "node infiniband"}, "metric"),
        ({"condition": "above", "threshold": 1, "window": 60}, "Extra inputs"),
    ],
)
def test_a_bad_metric_signal_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _metric(**fields)


def _mode(**fields: Any) -> FaultMode:
    base = {"id": "test.alpha", "layer": "host", "component": "node", "title": "T",
            "severity": "warning", "description": "D", "playbook": "notify"}
    return FaultMode.model_validate({**base, **fields})


def test_a_mode_with_metric_signals_only_needs_no_example() -> None:
    mode = _mode(signals={"metrics": [{"metric": "m", "condition": "absent"}]})

    assert mode.example is None
    assert mode.signals.logs == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "at least one signal"),
        ({"signals": {"logs": [], "metrics": []}}, "at least one signal"),
        ({"signals": {"logs": [{"contains": "x", "pattern": "x"}]}}, "needs an example"),
        ({"signals": {"logs": [{"contains": "x", "pattern": "x"}]}, "example": "x {gpu_uuid}"},
         "unknown placeholders"),
        ({"signals": {"logs": [{"contains": "x", "pattern": "x"}]}, "example": "x {}"},
         "unknown placeholders"),
        ({"signals": {"metrics": [{"metric": "m", "condition": "absent"}]}, "layer": "fabric"},
         "layer"),
    ],
)
def test_a_bad_mode_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _mode(**fields)
