"""The bench detect workload: real telemetry shapes, recent times, warm-up marked first."""

from __future__ import annotations

from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_match import LogMatcher
from vigil.ui.bench_detect_workload import WARMUP_ROUNDS, log_messages, metric_messages

from vigil.otlp_wire import LogsDecoder, MetricsDecoder

START = 1_767_225_600.0


def test_metric_messages_are_scrapes_of_every_copy_in_time_order() -> None:
    messages = metric_messages(nodes=2, rounds=WARMUP_ROUNDS + 1, copies=2, start=START)
    assert len(messages) == 2 * 2 * (WARMUP_ROUNDS + 1)
    assert [m.warmup for m in messages] == [True] * 4 * WARMUP_ROUNDS + [False] * 4
    decoder = MetricsDecoder()
    last = messages[-1]
    frame = decoder.decode(last.payload)
    assert len(frame) == last.count > 100  # dcgm-exporter, node-exporter and the trainer
    assert frame.times.min() == START + WARMUP_ROUNDS * 10.0
    hosts = {decoder.table.hosts[s] for m in messages[-4:]
             for s in decoder.decode(m.payload).series.tolist()}
    assert len(hosts) == 4  # two simulated nodes, each sent as two


def test_log_messages_hold_a_fault_line_in_a_thousand(library: FaultLibrary) -> None:
    messages = log_messages(nodes=2, lines=4000, start=START, lines_per_message=1000)
    assert sum(m.count for m in messages) == 4000
    assert [m.warmup for m in messages] == [True, True, False, False]
    lines = [line for m in messages for b in LogsDecoder().decode(m.payload) for line in b.lines]
    matcher = LogMatcher(library)
    assert sum(1 for x in lines if any(matcher.matches(x.body))) == 4
    assert min(x.timestamp for x in lines) == START
