"""Tests for the simulated hosts' log files: each source's line format, and rotation by size."""

from __future__ import annotations

from pathlib import Path

from vigil.sim.logs import KERNEL, SCHEDULER, TRAINING, LogWriter, format_line

T = 1_718_000_100.25  # 2024-06-10T06:15:00.25Z


def test_each_source_stamps_lines_as_the_real_system_does() -> None:
    assert format_line(KERNEL, "gpu-a-001", T, "msg") == (
        "2024-06-10T06:15:00.250000+00:00 gpu-a-001 kernel: msg")
    assert format_line(SCHEDULER, "slurm-ctl", T, "error: x") == (
        "[2024-06-10T06:15:00.250] error: x")
    assert format_line(TRAINING, "gpu-a-001", T, "[Rank 0] y") == (
        "2024-06-10T06:15:00.250Z [Rank 0] y")


def test_lines_go_to_the_hosts_file_for_the_source(tmp_path: Path) -> None:
    logs = LogWriter(tmp_path)

    line = logs.write("gpu-a-002", TRAINING, T, "hello")
    logs.write("gpu-a-002", KERNEL, T, "kernel says")
    logs.close()

    assert logs.path("gpu-a-002", TRAINING) == tmp_path / "gpu-a-002" / "train.log"
    assert (tmp_path / "gpu-a-002" / "train.log").read_text() == line + "\n"
    assert (tmp_path / "gpu-a-002" / "kern.log").read_text().endswith(" kernel: kernel says\n")
    assert logs.path("slurm-ctl", SCHEDULER).name == "slurmctld.log"


def test_touch_creates_an_empty_file_and_keeps_a_full_one(tmp_path: Path) -> None:
    logs = LogWriter(tmp_path)
    path = logs.touch("gpu-a-001", KERNEL)
    assert path.read_text() == ""

    logs.write("gpu-a-001", KERNEL, T, "one")
    logs.touch("gpu-a-001", KERNEL)
    assert path.read_text().endswith("kernel: one\n")


def test_a_file_past_its_size_is_rotated_to_dot_1(tmp_path: Path) -> None:
    logs = LogWriter(tmp_path, max_bytes=200)
    path = logs.path("gpu-a-001", KERNEL)
    lines = [logs.write("gpu-a-001", KERNEL, T + i, f"line {i}") for i in range(6)]
    logs.close()

    # The write that takes the file past 200 bytes is the last one in the rotated file.
    size = len(lines[0]) + 1  # every line here has the same length
    kept = 200 // size + 1
    assert path.with_name("kern.log.1").read_text().splitlines() == lines[:kept]
    assert path.read_text().splitlines() == lines[kept:]
