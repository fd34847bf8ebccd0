"""Publishes a node's log records as OTLP batches on the logs topic, keyed by the node."""

from __future__ import annotations

from collections.abc import Sequence

from vigil.collectors.base import Publisher

from vigil.bus import Topic
from vigil.otlp import LogBatch, LogLine, encode_logs


def node_resource(node: str) -> dict[str, str]:
    """The OTel resource of everything read on `node`."""
    return {"host.name": node, "vigil.entity": f"node:{node}"}


def publish_log_lines(
    publisher: Publisher, node: str, lines: Sequence[LogLine], max_lines_per_message: int,
) -> None:
    """Send `lines` in messages of at most `max_lines_per_message` lines each, in order."""
    resource = node_resource(node)
    for start in range(0, len(lines), max_lines_per_message):
        batch = LogBatch(resource=resource, lines=list(lines[start:start + max_lines_per_message]))
        publisher.publish(Topic.LOGS, encode_logs([batch]), key=node)


# syslog's names for priorities 0-7, as journalctl -p spells them; OTel keeps the source's text.
_SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def syslog_severity(priority: int | None) -> str:
    """severity_text for a syslog priority (0 emerg ... 7 debug); "" when there is none."""
    if priority is None or not 0 <= priority < len(_SEVERITIES):
        return ""
    return _SEVERITIES[priority]
