"""End to end on real components: Tansu broker, simulator over HTTP, collectors, detection,
incident store and the `vigil` command, all started by `vigil up` as a user would."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from running import RunningVigil

from vigil.bus import DL_REASON, DL_SOURCE, Bus, Topic
from vigil.settings import KafkaSettings
from vigil.store import Store

pytestmark = pytest.mark.integration


def _wait_for_incident(vigil: RunningVigil, entity: str, fault: str,
                       timeout_s: float = 60) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        rows = vigil.cli_json("incidents")
        assert isinstance(rows, list)
        for row in rows:
            if row["root_entity"] == entity and row["root_fault_id"] == fault:
                return row, time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"no incident for {fault} on {entity} within {timeout_s} s")


def test_status_reports_every_part(vigil_up: RunningVigil) -> None:
    status = vigil_up.cli_json("status")
    assert isinstance(status, dict)
    assert status["running"] is True
    assert status["embedded_broker"] is True
    assert status["kafka_ok"] and status["simulator_ok"] and status["self_metrics_ok"]
    assert status["console_ok"]


def test_injected_xid_becomes_incident_within_a_minute(vigil_up: RunningVigil) -> None:
    injected = vigil_up.cli_json("sim", "inject", "gpu.xid.79", "--target", "gpu:gpu-a-003/5")
    assert isinstance(injected, dict)
    assert "NVRM: Xid (PCI:0000:ab:00): 79" in injected["log_line"]  # GPU 5 of an HGX board
    row, waited = _wait_for_incident(vigil_up, "gpu:gpu-a-003/5", "gpu.xid.79")
    print(f"\nvigil up ready in {vigil_up.ready_s:.1f} s; fault -> incident in {waited:.1f} s "
          f"(detect_latency_s={row['detect_latency_s']})")
    assert row["severity"] == "critical"
    assert row["state"] == "open"
    assert "fallen off the bus" in row["title"]
    with Store.open(vigil_up.state.db_url) as store:
        incident = store.incident(row["id"])
        assert incident is not None
        alerts = store.alerts(row["id"])
    assert [a.fault_id for a in alerts] == ["gpu.xid.79"]
    assert "GPU has fallen off the bus" in alerts[0].evidence["log"]
    table = vigil_up.cli("incidents").stdout
    assert row["id"][:10] in table


def test_unknown_fault_and_target_are_refused_with_choices(vigil_up: RunningVigil) -> None:
    bad_fault = vigil_up.cli("sim", "inject", "gpu.xid.7", "--target", "gpu:gpu-a-001/0",
                             check=False)
    assert bad_fault.returncode == 2
    assert "unknown fault 'gpu.xid.7'" in bad_fault.stderr
    assert "gpu.xid.79" in bad_fault.stderr
    bad_target = vigil_up.cli("sim", "inject", "gpu.xid.48", "--target", "gpu:nowhere/9",
                              check=False)
    assert bad_target.returncode == 2
    assert "unknown target" in bad_target.stderr and "gpu:gpu-a-001/0" in bad_target.stderr


def test_bad_messages_are_dead_lettered_and_the_pipeline_goes_on(
    vigil_up: RunningVigil,
) -> None:
    bus = Bus(vigil_up.state.bootstrap, KafkaSettings(), client_id="test")
    try:
        bus.publish(Topic.LOGS, b"\xff\x00 not protobuf", key="gpu-a-001")
        bus.publish(Topic.ALERTS, json.dumps({"fault_id": "x"}).encode(), key="gpu-a-001")
        bus.flush()
        consumer = bus.consumer("test-deadletter", [Topic.DEADLETTER])
        found: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(found) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for m in records:
                    headers = {k: v.decode() for k, v in m.headers}
                    found[headers[DL_SOURCE].split("/")[0]] = headers[DL_REASON]
        consumer.close()
    finally:
        bus.close()
    assert "not an OTLP vigil.logs batch" in found.get(Topic.LOGS, "")
    assert "not an alert" in found.get(Topic.ALERTS, "")
    # The stages that dead-lettered those messages still work.
    vigil_up.cli("sim", "inject", "host.soft_lockup", "--target", "node:gpu-a-004")
    _wait_for_incident(vigil_up, "node:gpu-a-004", "host.soft_lockup")


def test_a_job_pushing_otlp_logs_reaches_detection(vigil_up: RunningVigil) -> None:
    """A training job instrumented with the OpenTelemetry SDK pushes its logs to `vigil up`'s
    OTLP receiver with the SDK's own exporter; an Xid line among them becomes an
    incident on the GPU it names, like one read from the kernel log."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    port = vigil_up.env["VIGIL_COLLECTORS_OTLP_PORT"]
    provider = LoggerProvider(resource=Resource.create({"host.name": "gpu-a-002",
                                                        "service.name": "trainer"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs")))
    try:
        provider.get_logger("trainer").emit(
            body="NVRM: Xid (PCI:0000:ab:00): 79, pid=4242, name=python, GPU has fallen off "
                 "the bus.", severity_text="ERROR")
    finally:
        provider.shutdown()
    row, waited = _wait_for_incident(vigil_up, "gpu:gpu-a-002/5", "gpu.xid.79")
    print(f"\nOTLP push -> incident in {waited:.1f} s")
    assert row["state"] == "open"


def test_this_hosts_own_metrics_are_collected(vigil_up: RunningVigil) -> None:
    """The host collector runs in `vigil up` too and reports through Vigil's self-metrics."""
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(vigil_up.state.metrics_url or "", timeout=5) as response:
            text = response.read().decode()
        sent = [line for line in text.splitlines()
                if line.startswith("vigil_component_sent_total{") and 'component="host"' in line]
        if sent and float(sent[0].rsplit(" ", 1)[1]) > 0:
            return
        time.sleep(1)
    raise AssertionError("the host collector reported nothing sent within 30 s")
