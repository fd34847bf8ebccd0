"""Tests for the rule detector: library log signals become alerts on the right GPU or node."""

from __future__ import annotations

from pathlib import Path

import pytest
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_rules import LogRuleDetector, pci_key

from vigil.frames import MetricFrame
from vigil.otlp import LogBatch, LogLine, MetricBatch, MetricSample
from vigil.records import Severity

NOW = 1_718_000_100.0
LOGGED_AT = 1_718_000_000.5
XID_79 = ("2024-06-10T06:13:20.500000+00:00 n1 kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=4001, "
          "name=python, GPU has fallen off the bus.")
NOISE = Path(__file__).parent / "data" / "kernel_noise.log"


@pytest.fixture
def detector(library: FaultLibrary) -> LogRuleDetector:
    return LogRuleDetector(library)


def _logs(node: str, *bodies: str) -> LogBatch:
    return LogBatch(resource={"host.name": node, "vigil.entity": f"node:{node}"},
                    lines=[LogLine(body=b, timestamp=LOGGED_AT + i) for i, b in enumerate(bodies)])


def _dcgm_metrics(node: str, gpus: dict[str, str]) -> MetricFrame:
    """A dcgm-exporter scrape of `node`: {gpu index: pci_bus_id}."""
    return MetricFrame.from_batches([MetricBatch(
        resource={"host.name": node, "vigil.entity": f"node:{node}"},
        samples=[MetricSample("DCGM_FI_DEV_GPU_TEMP", 60.0,
                              {"gpu": gpu, "pci_bus_id": pci, "Hostname": node}, NOW)
                 for gpu, pci in gpus.items()],
    )])


def test_xid_line_before_any_metrics_is_an_alert_on_the_node(detector: LogRuleDetector) -> None:
    (alert,) = detector.observe_logs(_logs("n1", XID_79), NOW)

    assert alert.fault_id == "gpu.xid.79"
    assert (alert.entity, alert.node) == ("node:n1", "n1")
    assert alert.severity == Severity.CRITICAL
    assert alert.detector == "log_rules"
    assert alert.summary == "GPU has fallen off the bus (Xid 79) on n1"
    assert (alert.observed_at, alert.detected_at) == (LOGGED_AT, NOW)
    assert alert.evidence == {"pci": "0000:3b:00", "log": XID_79}


def test_xid_line_after_metrics_is_an_alert_on_the_gpu(detector: LogRuleDetector) -> None:
    seen = detector.observe_metrics(
        _dcgm_metrics("n1", {"0": "00000000:18:00.0", "2": "00000000:3B:00.0"}), NOW
    )
    assert seen == []  # metrics teach the detector; they raise nothing themselves

    (alert,) = detector.observe_logs(_logs("n1", XID_79), NOW)

    assert (alert.entity, alert.node) == ("gpu:n1/2", "n1")
    assert alert.evidence["pci"] == "0000:3b:00"
    assert alert.evidence["log"] == XID_79


def test_gpu_addresses_are_learned_per_node(detector: LogRuleDetector) -> None:
    detector.observe_metrics(_dcgm_metrics("n2", {"2": "00000000:3B:00.0"}), NOW)

    (on_n1,) = detector.observe_logs(_logs("n1", XID_79), NOW)
    (on_n2,) = detector.observe_logs(_logs("n2", XID_79), NOW)

    assert on_n1.entity == "node:n1"
    assert on_n2.entity == "gpu:n2/2"


def test_an_address_no_metric_named_falls_back_to_the_node(detector: LogRuleDetector) -> None:
    detector.observe_metrics(_dcgm_metrics("n1", {"0": "00000000:18:00.0"}), NOW)

    (alert,) = detector.observe_logs(_logs("n1", XID_79), NOW)

    assert alert.entity == "node:n1"


def test_samples_without_gpu_labels_teach_nothing(detector: LogRuleDetector) -> None:
    batch = MetricBatch(resource={"host.name": "n1"}, samples=[
        MetricSample("DCGM_FI_DEV_GPU_TEMP", 60.0, {"pci_bus_id": "00000000:3B:00.0"}, NOW),
        MetricSample("node_load1", 3.0, {"gpu": "2"}, NOW),
    ])
    detector.observe_metrics(MetricFrame.from_batches([batch]), NOW)

    (alert,) = detector.observe_logs(_logs("n1", XID_79), NOW)

    assert alert.entity == "node:n1"


def test_host_line_is_an_alert_on_the_node_with_its_named_groups(
    detector: LogRuleDetector,
) -> None:
    line = ("2024-06-10T06:13:20.500000+00:00 n1 kernel: "
            "INFO: task python:4242 blocked for more than 120 seconds.")
    detector.observe_metrics(_dcgm_metrics("n1", {"2": "00000000:3B:00.0"}), NOW)

    (alert,) = detector.observe_logs(_logs("n1", line), NOW)

    assert (alert.fault_id, alert.entity, alert.severity) == (
        "host.hung_task", "node:n1", Severity.WARNING,
    )
    assert alert.evidence == {"task": "python", "pid": "4242", "secs": "120", "log": line}


def test_every_matching_line_of_a_batch_is_an_alert_in_order(detector: LogRuleDetector) -> None:
    xid_48 = XID_79.replace("): 79, ", "): 48, ")
    noise = NOISE.read_text().splitlines()
    batch = _logs("n1", noise[0], xid_48, noise[1], XID_79)

    alerts = detector.observe_logs(batch, NOW)

    assert [(a.fault_id, a.observed_at) for a in alerts] == [
        ("gpu.xid.48", LOGGED_AT + 1), ("gpu.xid.79", LOGGED_AT + 3),
    ]


def test_lines_that_match_no_signal_raise_no_alerts(detector: LogRuleDetector) -> None:
    detector.observe_metrics(_dcgm_metrics("n1", {"2": "00000000:3B:00.0"}), NOW)
    noise = NOISE.read_text().splitlines()
    assert len(noise) == 10

    assert detector.observe_logs(_logs("n1", *noise), NOW) == []
    assert detector.observe_logs(_logs("n1"), NOW) == []


def test_long_lines_are_cut_in_the_evidence(detector: LogRuleDetector) -> None:
    line = XID_79 + " " + "x" * 1000

    (alert,) = detector.observe_logs(_logs("n1", line), NOW)

    assert alert.evidence["log"] == line[:500]


@pytest.mark.parametrize(
    ("address", "key"),
    [("00000000:3B:00.0", "3b:00"), ("0000:3b:00", "3b:00"), ("0000:3B:00.1", "3b:00"),
     ("3b:00", "3b:00"), ("garbage", "garbage")],
)
def test_pci_key_matches_dcgm_and_nvrm_spellings(address: str, key: str) -> None:
    assert pci_key(address) == key
