"""Tests for the fault-mode library: the shipped modes are consistent, bad files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from vigil.diagnosis.library import FaultLibrary, FaultMode, LibraryError, load_library

from vigil.records import Severity

LIBRARIES = Path(__file__).parent / "data" / "libraries"
SHIPPED = load_library()  # for parametrize ids; tests use the `library` fixture
EXAMPLE_FIELDS = {"pci": "0000:3b:00", "pid": 1234, "node": "n1"}
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
    gpu_79 = library.get("gpu.xid.79")
    assert (gpu_79.xid, gpu_79.severity, gpu_79.component) == (79, Severity.CRITICAL, "gpu")
    assert gpu_79.downstream == ["job.nccl.timeout"]


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
    line = mode.example.format(**EXAMPLE_FIELDS)

    assert _matching_modes(library, line) == [mode.id]
    assert _matching_modes(library, KERNEL_PREFIX + line) == [mode.id]


@pytest.mark.parametrize(
    "mode", [m for m in SHIPPED if m.xid is not None and m.example], ids=lambda m: m.id
)
def test_xid_example_yields_the_pci_address_as_evidence(mode: FaultMode) -> None:
    assert mode.example is not None
    line = mode.example.format(**EXAMPLE_FIELDS)

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
        ("bad_regex", ["bad_regex.yaml: ", "modes.0.signals.logs.0.pattern", "not a valid regex"]),
        ("unknown_key", ["unknown_key.yaml: ", "modes.0.severity_level", "Extra inputs"]),
        ("unknown_downstream", ["b_causes.yaml: ", "test.beta", "['test.gamma']"]),
        ("not_yaml", ["broken.yaml: ", "not valid YAML"]),
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
