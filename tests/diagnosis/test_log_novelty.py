"""Tests for the streaming log-template detector: new templates, rate spikes, quiet when healthy."""

from __future__ import annotations

import random

import pytest
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_novelty import (
    NEW_TEMPLATE,
    RATE_SPIKE,
    LogNoveltyDetector,
    NoveltyTuning,
)
from vigil.sim.cluster import KERNEL_NOISE
from vigil.sim.logs import KERNEL, TRAINING, format_line

from vigil.frames import MetricFrame
from vigil.otlp import LogBatch, LogLine
from vigil.records import Alert, Severity

T0 = 1_718_000_000.0
WARMUP_S = 600.0
BMC = "ipmi_si IPI0001:00: BMC reset {} times, retrying in {} s"  # no library mode has it
XID_79 = ("NVRM: Xid (PCI:0000:3b:00): 79, pid=4001, name=python, "
          "GPU has fallen off the bus.")


def _batch(host: str, bodies: list[str], at: float, spacing: float = 0.001) -> LogBatch:
    return LogBatch(resource={"host.name": host},
                    lines=[LogLine(body=b, timestamp=at + i * spacing)
                           for i, b in enumerate(bodies)])


def _step(rng: random.Random, host: str, at: float) -> str:
    return format_line(TRAINING, host, at,
                       f"[Rank 0] iteration {rng.randrange(10**6)} | step time "
                       f"{rng.uniform(0.5, 3):.3f} s | loss {rng.uniform(1, 3):.4f} | "
                       f"tokens/s {rng.randrange(20_000, 60_000)}")


def _warm(detector: LogNoveltyDetector, hosts: list[str]) -> float:
    """Feed a steady training log through the warm-up; returns the time it ended."""
    rng = random.Random(1)
    at = T0
    while at < T0 + WARMUP_S:
        for host in hosts:
            detector.observe_logs(_batch(host, [_step(rng, host, at)], at), at)
        at += 10.0
    return at


@pytest.fixture
def detector(library: FaultLibrary) -> LogNoveltyDetector:
    return LogNoveltyDetector(library, NoveltyTuning(warmup_s=WARMUP_S))


def test_a_new_template_after_warmup_raises_one_info_alert(
        detector: LogNoveltyDetector) -> None:
    at = _warm(detector, ["n1", "n2"])
    odd = format_line(KERNEL, "n2", at, BMC.format(417, 9))
    alerts = detector.observe_logs(_batch("n2", [_step(random.Random(2), "n2", at), odd], at), at)
    [alert] = alerts
    assert (alert.fault_id, alert.entity, alert.node, alert.severity, alert.detector) == (
        NEW_TEMPLATE, "node:n2", "n2", Severity.INFO, "log_novelty")
    assert alert.observed_at == at + 0.001  # the new line's own time, not the batch's
    assert alert.detected_at == at
    assert alert.evidence["example"] == odd
    assert alert.evidence["template"] == (
        "<TIME> n2 kernel: ipmi_si IPI0<NUM>:<NUM>: BMC reset <NUM> times, retrying in <NUM> s")
    assert (alert.evidence["count"], alert.evidence["baseline"]) == ("1", "0")
    # The same template again, on this host or another, is no longer new.
    later = at + 3600.0
    again = format_line(KERNEL, "n1", later, BMC.format(2, 30))
    assert detector.observe_logs(_batch("n1", [again], later), later) == []
    assert detector.observe_logs(_batch("n2", [odd], later + 1), later + 1) == []


def test_nothing_is_new_during_warmup_nor_after_it(detector: LogNoveltyDetector) -> None:
    odd = "2024-06-10T06:00:05Z trainer: checkpoint writer stalled on /mnt/ckpt"
    assert detector.observe_logs(_batch("n1", [odd], T0), T0) == []
    at = _warm(detector, ["n1"])
    assert detector.observe_logs(_batch("n1", [odd], at), at) == []


def test_lines_differing_only_in_numbers_and_addresses_are_one_template(
        detector: LogNoveltyDetector) -> None:
    at = _warm(detector, ["n1"])
    templates = detector.sizes()["templates"]
    rng = random.Random(3)
    lines = [format_line(KERNEL, "n1", at + i,
                         f"python[{rng.randrange(99999)}]: segfault at {rng.randrange(2**40):x} "
                         f"ip 0x{rng.randrange(2**44):012x} peer 10.0.{rng.randrange(256)}."
                         f"{rng.randrange(256)}:{rng.randrange(65536)} error {rng.randrange(9)}")
             for i in range(500)]
    alerts = [a for i in range(0, 500, 50)
              for a in detector.observe_logs(_batch("n1", lines[i:i + 50], at + i), at + i)]
    assert [a.fault_id for a in alerts] == [NEW_TEMPLATE]
    assert detector.sizes()["templates"] == templates + 1
    assert alerts[0].evidence["template"] == (
        "<TIME> n1 kernel: python[<NUM>]: segfault at <HEX> ip <HEX> peer <IP> error <NUM>")


def test_several_new_templates_in_a_batch_are_one_alert(detector: LogNoveltyDetector) -> None:
    at = _warm(detector, ["n1"])
    new = ["EXT4-fs error (device md0): htree_dirblock_to_tree: bad entry in directory",
           "BTRFS warning: csum failed root 5 ino 260 off 0"]
    [alert] = detector.observe_logs(_batch("n1", new, at), at)
    assert alert.evidence["new_templates"] == "2"
    assert alert.evidence["example"] == new[0]


def test_library_lines_are_left_to_the_rule_detector(library: FaultLibrary) -> None:
    detector = LogNoveltyDetector(library, NoveltyTuning(warmup_s=WARMUP_S, learn_windows=2))
    at = _warm(detector, ["n1"])
    xid = format_line(KERNEL, "n1", at, XID_79)
    nvme = format_line(KERNEL, "n1", at, "nvme nvme0: I/O 417 QID 9 timeout, aborting")
    assert detector.observe_logs(_batch("n1", [xid, nvme], at), at) == []  # not new
    assert detector.observe_logs(_batch("n1", [xid] * 5000, at + 60), at + 60) == []  # no spike


def _spike_detector(library: FaultLibrary) -> LogNoveltyDetector:
    """Warm after the first window, so the first template is learned, not new."""
    return LogNoveltyDetector(library, NoveltyTuning(warmup_s=1.0))


def _window(detector: LogNoveltyDetector, window: int, count: int,
            parts: int = 1) -> list[Alert]:
    """`count` lines of one template in rate window `window` (60 s), in `parts` batches."""
    rng = random.Random(window)
    start = T0 + window * 60.0
    alerts = []
    for part in range(parts):
        at = start + part * 10.0
        lines = [_step(rng, "n1", at) for _ in range(count // parts)]
        alerts += detector.observe_logs(_batch("n1", lines, at), at)
    return alerts


def test_a_rate_spike_raises_one_alert_per_episode(library: FaultLibrary) -> None:
    detector = _spike_detector(library)
    for window in range(20):
        assert _window(detector, window, 4) == []
    # 50 times the usual count, in four batches: the alert comes with the one that crosses
    # the threshold (100 lines), not at the end of the window.
    rng = random.Random(0)
    crossed = [len(detector.observe_logs(_batch("n1", [_step(rng, "n1", T0)] * 50, at), at))
               for at in (T0 + 1200 + s for s in (0.0, 10.0, 20.0, 30.0))]
    assert crossed == [0, 1, 0, 0]
    assert _window(detector, 21, 200) == []  # the same episode
    for window in range(22, 28):
        assert _window(detector, window, 4) == []  # calm again: the episode ends
    # The next episode must beat what the first taught it (three times its clipped peak).
    assert _window(detector, 28, 200) == []
    [alert] = _window(detector, 29, 1000)
    assert (alert.fault_id, alert.entity, alert.severity) == (
        RATE_SPIKE, "node:n1", Severity.WARNING)
    assert alert.evidence["count"] == "1000"
    assert 4.0 < float(alert.evidence["baseline"]) < 100.0  # learned, spikes clipped
    assert alert.evidence["template"].startswith("<TIME> [Rank <NUM>] iteration <NUM>")
    assert alert.observed_at == T0 + 29 * 60.0


def test_rates_are_judged_only_after_the_template_has_a_history(
        library: FaultLibrary) -> None:
    detector = _spike_detector(library)
    for window in range(5):
        _window(detector, window, 4)
    assert _window(detector, 5, 1000) == []


def test_a_backlog_is_binned_by_the_lines_own_times(library: FaultLibrary) -> None:
    detector = _spike_detector(library)
    for window in range(20):
        _window(detector, window, 60)
    # A collector catching up hands over half an hour at the usual rate in one batch.
    rng = random.Random(5)
    start = T0 + 20 * 60.0
    lines = [_step(rng, "n1", start + s) for s in range(1800)]
    assert detector.observe_logs(_batch("n1", lines, start, spacing=1.0), start + 1800) == []


def test_healthy_sim_logs_raise_nothing_for_a_day(library: FaultLibrary) -> None:
    """Sixteen nodes as the simulator writes them (`SimCluster._routine_logs`): a training
    line per job every 10 s, rare harmless kernel lines, plus a chatty trainer whose rate
    wanders, as real ones do. Default tuning."""
    detector = LogNoveltyDetector(library)
    rng = random.Random(7)
    hosts = [f"gpu-a-{i:03d}" for i in range(16)]
    chatter = [_step(rng, "gpu-a-007", T0 + i) for i in range(100)]  # formatting is slow
    alerts: list[Alert] = []
    for step in range(8640):  # 24 h of 10 s steps
        at = T0 + step * 10.0
        for host in hosts[:2]:  # one job's rank 0 each
            alerts += detector.observe_logs(_batch(host, [_step(rng, host, at)], at), at)
        chatty = chatter[:rng.randrange(5, 60)]
        alerts += detector.observe_logs(_batch("gpu-a-007", chatty, at, spacing=0.1), at)
        for host in hosts:
            if rng.random() < 0.02:
                noise = format_line(KERNEL, host, at, rng.choice(KERNEL_NOISE))
                alerts += detector.observe_logs(_batch(host, [noise], at), at)
    assert alerts == []
    assert detector.sizes()["templates"] == 1 + len(KERNEL_NOISE)  # it did see them all


def test_memory_is_bounded(library: FaultLibrary) -> None:
    tuning = NoveltyTuning(warmup_s=0.0, cache_size=50, max_templates=20, max_series=30,
                           novelty_cooldown_s=0.0)
    detector = LogNoveltyDetector(library, tuning)
    letters = "ghijklmnopqrstuvwxyz"  # no digits or hex letters: every line is its own key

    def word(n: int) -> str:
        return "".join(letters[n // 20**k % 20] for k in range(3))

    alerts = 0
    for i in range(400):
        at = T0 + i
        line = f"{word(i)} {word(i + 3000)} {word(i + 6000)} ring"
        alerts += len(detector.observe_logs(_batch(f"n{i % 7}", [line], at), at))
    sizes = detector.sizes()
    assert sizes["keys"] <= 50 and sizes["shapes"] <= 50
    assert sizes["templates"] <= 20 and sizes["rates"] <= 30
    assert alerts == 400  # every line was a template of its own, so the bounds were tested


def test_multiline_bodies_keep_lines_and_keys_aligned(detector: LogNoveltyDetector) -> None:
    at = _warm(detector, ["n1"])
    body = "Traceback (most recent call last):\n  File \"train.py\", line 7\nValueError: bad"
    [alert] = detector.observe_logs(_batch("n1", ["plain line", body], at), at)
    assert alert.evidence["example"] == "plain line"
    assert detector.observe_logs(_batch("n1", [body], at + 1), at + 1) == []


def test_examples_are_cut_at_500_characters(detector: LogNoveltyDetector) -> None:
    at = _warm(detector, ["n1"])
    [alert] = detector.observe_logs(_batch("n1", ["x" * 3000], at), at)
    assert len(alert.evidence["example"]) == 500 and len(alert.evidence["template"]) == 500


def test_metrics_are_not_its_business(detector: LogNoveltyDetector) -> None:
    assert detector.observe_metrics(MetricFrame.from_batches([]), T0) == []
    assert detector.observe_logs(LogBatch(resource={"host.name": "n1"}, lines=[]), T0) == []


def test_a_host_gets_one_novelty_alert_per_cooldown(detector: LogNoveltyDetector) -> None:
    """A burst of new templates on one host (a driver reloading, say) is one alert."""
    at = _warm(detector, ["n1", "n2"])
    cooldown = detector.tuning.novelty_cooldown_s
    raised = [len(detector.observe_logs(_batch(host, [body], when), when)) for host, body, when in [
        ("n1", "usb 1-1: new high-speed USB device number 3 using xhci_hcd", at),
        ("n1", "cpufreq: governor switched to performance on cpu 12", at + 60),
        ("n2", "tpm tpm0: A TPM error (379) occurred attempting to determine", at + 60),
        ("n1", "EXT4-fs error (device md0): htree_dirblock_to_tree: bad entry", at + cooldown)]]
    assert raised == [1, 0, 1, 1]
