"""Alert de-duplication: one alert per fault on an entity until it has been quiet a while.

As in Alertmanager, an alert's identity is its fingerprint (fault mode + entity, see
`Alert.fingerprint`). The first alert of a fingerprint passes; repeats whose evidence is
younger than `repeat_after_s` since the last one that passed are dropped, so a GPU that logs
its Xid every second is one alert, and the same fault on the same GPU a day later is a new
one. Pure: times are the alerts' own `observed_at`.
"""

from __future__ import annotations

from collections import OrderedDict

from vigil.records import Alert

DEFAULT_REPEAT_AFTER_S = 3600.0
_REMEMBERED = 100_000  # fingerprints kept; the least recently seen are forgotten first


class Dedupe:
    def __init__(self, repeat_after_s: float = DEFAULT_REPEAT_AFTER_S,
                 remembered: int = _REMEMBERED) -> None:
        self.repeat_after_s = repeat_after_s
        self.remembered = remembered
        self._last: OrderedDict[str, float] = OrderedDict()  # fingerprint -> observed_at passed

    def __call__(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts that are new; the rest are repeats."""
        passed = []
        for alert in alerts:
            fingerprint = alert.fingerprint
            last = self._last.get(fingerprint)
            if last is not None and alert.observed_at - last < self.repeat_after_s:
                self._last.move_to_end(fingerprint)
                continue
            self._last[fingerprint] = alert.observed_at
            self._last.move_to_end(fingerprint)
            passed.append(alert)
        while len(self._last) > self.remembered:
            self._last.popitem(last=False)
        return passed
