"""`vigil bench collectors`: figures come from a real child process reading real sources."""

from __future__ import annotations

import json

from typer.testing import CliRunner
from vigil.ui.cli import app


def test_bench_collectors_reports_cost_and_throughput() -> None:
    result = CliRunner().invoke(app, ["bench", "collectors", "--rounds", "3", "--log-rate",
                                      "5", "--no-kafka", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["samples_per_interval"] > 8 * 5  # the 8 GPUs' fields and the host's
    assert figures["log_lines_published"] == 3 * 10 * 5
    assert figures["cpu_ms_per_interval"] > 0 and 0 < figures["peak_rss_mb"] < 1000
    assert figures["max_samples_per_s"] > 0 and figures["max_log_lines_per_s"] > 0
    assert figures["unsent_after_flush"] == 0
