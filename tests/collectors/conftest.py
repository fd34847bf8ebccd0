"""Collector fixtures: an in-memory bus and counters that keep what a collector reports."""

from __future__ import annotations

import pytest
from collector_fakes import RecordingBus, Tally


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def tally() -> Tally:
    """Assign `tally.component` to a collector's `counters`, then read `tally.totals()`."""
    return Tally()
