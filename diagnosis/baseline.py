"""Robust per-series baselines: how far a value sits from what the series usually does.

Each series keeps a window of its recent values and of its recent steps (differences). A new
value is scored against the window's median and MAD (median absolute deviation, scaled to
a standard deviation for normal data), which a few outliers in the window do not move, so a
fault does not teach the baseline to expect itself. The score of a point is the larger of its
level z and, when it moved away from the median, its step z: a level shift and a sudden spike
both count, the way back does not.

z maps to a score in [0, 1) as ``z² / (z² + Z_HALF²)``: 0.5 at ``Z_HALF`` deviations.
Scores are separate from thresholds; `label` is one threshold (0.5) for those who need one.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import numpy as np

Z_HALF: Final = 6.0  # deviations at which the score is 0.5
MAD_TO_SIGMA: Final = 1.4826
WARMUP: Final = 30  # points a series needs before it scores anything


class RobustBaseline:
    """One series' baseline; `score(value)` scores it, then learns it."""

    def __init__(self, window: int = 256, min_spread: float = 1e-9) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.steps: deque[float] = deque(maxlen=window)
        self.min_spread = min_spread

    def score(self, value: float) -> float:
        if not math.isfinite(value):
            return 1.0  # NaN or Inf where a number belongs is itself the anomaly
        z = 0.0
        if len(self.values) >= WARMUP:
            z, median = _z(value, self.values, self.min_spread)
            previous = self.values[-1]
            if abs(value - median) > abs(previous - median):  # a step away, not the way back
                z = max(z, _z(value - previous, self.steps, self.min_spread)[0])
        if self.values:
            self.steps.append(value - self.values[-1])
        self.values.append(value)
        return z * z / (z * z + Z_HALF * Z_HALF)


def _z(value: float, window: deque[float], min_spread: float) -> tuple[float, float]:
    """How many deviations `value` is from the window's median, and that median."""
    data = np.fromiter(window, dtype=float, count=len(window))
    median = float(np.median(data))
    mad = float(np.median(np.abs(data - median))) * MAD_TO_SIGMA
    # A flat series (MAD 0) still has a scale: the mean absolute deviation, then a floor.
    spread = mad or float(np.mean(np.abs(data - median))) or min_spread
    return abs(value - median) / spread, median
