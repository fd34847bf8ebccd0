"""Simulated time: real time, or faster (10x runs a ten-hour scenario in an hour)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SimClock:
    """Simulated seconds since `origin`, advancing `speed` times as fast as the wall clock.

    At speed 1 simulated time *is* wall time, so latencies measured against it are real.
    """

    speed: float = 1.0
    origin: float = field(default_factory=time.time)
    _wall_origin: float = field(default_factory=time.time)

    def now(self) -> float:
        return self.origin + (time.time() - self._wall_origin) * self.speed

    def wall_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.speed
