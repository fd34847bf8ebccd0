"""The spool's bounds and timeouts, and those of the producer it sends with."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.collectors.spool_kafka import Acks


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """Bounds and timeouts of the spool and of the producer it sends with."""

    max_memory_bytes: int = 64 * 1024 * 1024
    max_disk_bytes: int = 1024 * 1024 * 1024
    segment_bytes: int | None = None  # default: max_disk_bytes / 8, at most 16 MiB
    max_in_flight_bytes: int = 8 * 1024 * 1024
    ack_timeout_s: float = 10.0
    connect_timeout_s: float = 2.0
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 10.0
    close_timeout_s: float = 5.0
    acks: Acks = 1

    def __post_init__(self) -> None:
        problems = [f"{name} must be positive" for name in (
            "max_memory_bytes", "max_in_flight_bytes", "ack_timeout_s", "connect_timeout_s",
            "retry_backoff_s", "close_timeout_s") if getattr(self, name) <= 0]
        if self.segment_size <= 0 or self.max_disk_bytes < 2 * self.segment_size:
            problems.append("max_disk_bytes must hold at least two segments of segment_bytes")
        if self.retry_backoff_max_s < self.retry_backoff_s:
            problems.append("retry_backoff_max_s must be at least retry_backoff_s")
        if problems:
            raise ValueError("invalid spool config: " + "; ".join(problems))

    @property
    def segment_size(self) -> int:
        """Bytes a segment file grows to: what dropping the oldest frees at a time."""
        if self.segment_bytes is not None:
            return self.segment_bytes
        return min(16 * 1024 * 1024, self.max_disk_bytes // 8)


DEFAULT_SPOOL_CONFIG = SpoolConfig()
