"""Tests for simulated time: real time at speed 1, faster at higher speeds."""

from __future__ import annotations

import dataclasses
import time

import pytest
from vigil.sim.clock import SimClock


def test_at_speed_one_simulated_time_is_wall_time() -> None:
    before = time.time()
    clock = SimClock()
    now = clock.now()

    assert before <= now <= time.time()
    assert clock.wall_seconds(15.0) == 15.0


def test_a_faster_clock_runs_from_its_origin_at_its_speed() -> None:
    started = time.time()
    clock = SimClock(speed=10.0, origin=5_000.0)

    assert 5_000.0 <= clock.now() <= 5_000.0 + (time.time() - started) * 10
    time.sleep(0.05)
    elapsed = clock.now() - 5_000.0
    assert 0.5 <= elapsed <= (time.time() - started) * 10


def test_wall_seconds_shrink_with_speed() -> None:
    assert SimClock(speed=10.0).wall_seconds(60.0) == pytest.approx(6.0)
    assert SimClock(speed=0.5).wall_seconds(60.0) == pytest.approx(120.0)


def test_a_clock_cannot_be_changed() -> None:
    clock = SimClock(speed=2.0)

    with pytest.raises(dataclasses.FrozenInstanceError):
        clock.speed = 4.0  # type: ignore[misc]
