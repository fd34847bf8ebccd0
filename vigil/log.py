"""Structured logging: one line per event, `key=value` pairs, values quoted when needed."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

# Attributes every LogRecord has; anything else was passed through `extra=` and is printed.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """`ts=2026-11-22T10:00:00.123Z level=info logger=vigil.bus msg="..." topic=vigil.logs`."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        parts += [f"{k}={_quote(v)}" for k, v in record.__dict__.items() if k not in _STANDARD]
        if record.exc_info:
            parts.append(f"error={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send Vigil's logs, structured, to `stream` (stderr by default); quiet chatty libraries."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python logs every reconnect and rebalance at INFO; keep its warnings only.
    logging.getLogger("kafka").setLevel(logging.ERROR if level != "debug" else logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
