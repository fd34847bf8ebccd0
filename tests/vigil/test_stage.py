"""ConsumerStage: bad input is dead-lettered with its reason and the stage keeps consuming."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vigil.stage import BadMessage, ConsumerStage


@dataclass
class Message:
    topic: str
    value: bytes
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


@dataclass
class FakeConsumer:
    """Hands out its messages once, then empty polls; fails once if told to."""

    messages: list[Message]
    fail_first_poll: bool = False
    closed: bool = False

    def poll(self, timeout_ms: int) -> dict[str, list[Message]]:
        if self.fail_first_poll:
            self.fail_first_poll = False
            raise ConnectionError("broker went away")
        out, self.messages = self.messages, []
        if not out:
            time.sleep(timeout_ms / 1000)
        return {"tp": out} if out else {}

    def assignment(self) -> set[str]:
        return {"tp"}

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeBus:
    consumers: list[FakeConsumer]
    dead: list[tuple[bytes, str, str]] = field(default_factory=list)
    handed_out: list[FakeConsumer] = field(default_factory=list)

    def consumer(self, group: str, topics: list[str]) -> FakeConsumer:
        consumer = self.consumers.pop(0) if self.consumers else FakeConsumer([])
        self.handed_out.append(consumer)
        return consumer

    def dead_letter(self, message: Message, reason: str, stage: str) -> None:
        self.dead.append((message.value, reason, stage))

    def flush(self) -> None:
        pass


class Recorder(ConsumerStage):
    def __init__(self, bus: Any) -> None:
        super().__init__(bus, "recorder", "g", ["t"])
        self.handled: list[bytes] = []
        self.done = threading.Event()

    def handle(self, message: Any, now: float) -> None:
        if message.value == b"bad":
            raise BadMessage("not a thing this stage reads")
        if message.value == b"boom":
            raise KeyError("bug")
        self.handled.append(message.value)
        if message.value == b"last":
            self.done.set()


def _run(bus: FakeBus) -> Recorder:
    stage = Recorder(bus)
    stage.start()
    assert stage.done.wait(5), "stage did not reach the last message"
    stage.shutdown()
    return stage


def test_bad_and_failing_messages_are_dead_lettered_and_consumption_goes_on() -> None:
    bus = FakeBus([FakeConsumer([Message("t", v) for v in (b"a", b"bad", b"boom", b"last")])])
    stage = _run(bus)
    assert stage.handled == [b"a", b"last"]
    assert bus.dead == [(b"bad", "not a thing this stage reads", "recorder"),
                        (b"boom", "handler failed: KeyError: 'bug'", "recorder")]
    assert stage.ready.is_set()
    assert all(c.closed for c in bus.handed_out)


def test_a_failing_consumer_is_replaced() -> None:
    bus = FakeBus([FakeConsumer([], fail_first_poll=True),
                   FakeConsumer([Message("t", b"last")])])
    stage = _run(bus)
    assert stage.handled == [b"last"]
    assert len(bus.handed_out) >= 2 and bus.handed_out[0].closed
