"""Cluster events as Kubernetes reports them (Pod failed, Node not ready), kept for watchers.

A bounded, append-only list with sequence numbers: a watcher asks for everything after the
last number it saw, as a Kubernetes watch resumes from a resourceVersion.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float
    type: str  # "Normal" or "Warning"
    kind: str  # involved object: "Pod", "Node", "Job"
    name: str  # e.g. "train/llm-70b-02-worker-3", "gpu-a-007"
    reason: str  # e.g. "Failed", "NodeNotReady", "Started"
    message: str


class EventLog:
    def __init__(self, keep: int = 100_000) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._seq = 0
        self._lock = threading.Lock()

    def emit(self, now: float, type_: str, kind: str, name: str, reason: str,
             message: str) -> Event:
        with self._lock:
            self._seq += 1
            event = Event(self._seq, now, type_, kind, name, reason, message)
            self._events.append(event)
            return event

    def since(self, seq: int, limit: int = 10_000) -> list[Event]:
        """Events numbered above `seq`, oldest first, at most `limit`."""
        with self._lock:
            return [e for e in self._events if e.seq > seq][:limit]

    @property
    def last_seq(self) -> int:
        return self._seq
