"""Write a benchmark run's scores as a Markdown report with PNG plots beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from vigil.sim.scoring import FaultResult, LayerScores, Scores

REPORT_NAME = "report.md"
RECALL_PLOT = "recall_top1_by_layer.png"
LATENCY_PLOT = "alert_latency_cdf.png"
ROOT_CAUSE_PLOT = "root_cause_latency.png"
NO_DATA = "_no data_"
WIDE_RANGE = 100.0  # max/min latency above which the CDF's x axis goes logarithmic
DPI = 110


def write_report(scores: Scores, folder: Path, title: str, meta: dict[str, str]) -> Path:
    """Write `folder/report.md` and its plots; return the report's path."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = {
        RECALL_PLOT: _recall_plot(scores),
        LATENCY_PLOT: _latency_cdf(scores),
        ROOT_CAUSE_PLOT: _root_cause_plot(scores.overall.per_fault),
    }
    for name, figure in plots.items():
        path = folder / name
        if figure is None:
            path.unlink(missing_ok=True)  # a stale plot from an earlier run would mislead
        else:
            FigureCanvasAgg(figure)  # render with Agg, whatever pyplot's backend is
            figure.savefig(path, dpi=DPI)

    def plot(name: str, alt: str) -> str:
        return f"![{alt}]({name})" if plots[name] is not None else NO_DATA

    lines = [f"# {title}", ""]
    if meta:
        lines += ["## Run", "", "| | |", "|---|---|"]
        lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in meta.items()]
        lines.append("")
    lines += ["## Summary", "", *_summary_table(scores), ""]
    lines += [
        f"False alerts in healthy time: {scores.false_alerts} over "
        f"{scores.healthy_node_hours:.2f} node-hours "
        f"({_number(scores.false_alerts_per_1000_node_hours)} per 1000 node-hours).",
        "",
        f"An alert or incident counts for a fault from 5 s before its onset to "
        f"{scores.grace_s:g} s after its end (rules: `vigil.sim.scoring`).",
        "",
        "## Recall and top-1 root cause by layer",
        "",
        plot(RECALL_PLOT, "recall and top-1 accuracy per layer"),
        "",
        "## Time to first alert",
        "",
        plot(LATENCY_PLOT, "CDF of time to first alert per layer"),
        "",
        "## Time to root cause",
        "",
        plot(ROOT_CAUSE_PLOT, "time to correct root cause per fault"),
        "",
        "## Faults",
        "",
        *_fault_table(scores.overall.per_fault),
        "",
    ]
    report = folder / REPORT_NAME
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def _summary_table(scores: Scores) -> list[str]:
    header = (
        "| layer | faults | detected | recall | precision | alert p50 | alert p95 | alert p99 "
        "| top-1 | top-3 | root cause p50 | root cause p95 |"
    )
    rows = [header, "|---" * 12 + "|"]
    for name, layer in [("**overall**", scores.overall), *scores.by_layer.items()]:
        rows.append(_summary_row(name, layer))
    return rows


def _summary_row(name: str, s: LayerScores) -> str:
    cells = [
        name, str(s.faults), str(s.detected), _percent(s.recall), _percent(s.precision),
        _seconds(s.alert_latency_p50_s), _seconds(s.alert_latency_p95_s),
        _seconds(s.alert_latency_p99_s), _percent(s.root_cause_top1),
        _percent(s.root_cause_top3), _seconds(s.root_cause_latency_p50_s),
        _seconds(s.root_cause_latency_p95_s),
    ]
    return "| " + " | ".join(cells) + " |"


def _fault_table(results: Sequence[FaultResult]) -> list[str]:
    if not results:
        return [NO_DATA]
    rows = [
        "| scenario | fault | layer | root | detected | first alert | top-1 | top-3 "
        "| predicted root | time to root cause |",
        "|---" * 10 + "|",
    ]
    for r in results:
        cells = [
            r.scenario, f"`{r.fault_id}`", r.layer, f"`{r.root_entity}`", _yes(r.detected),
            _seconds(r.first_alert_s), _yes(r.top1), _yes(r.top3),
            f"`{r.predicted_root}`" if r.predicted_root is not None else "-",
            _seconds(r.root_cause_s),
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def _recall_plot(scores: Scores) -> Figure | None:
    layers = [name for name, s in scores.by_layer.items() if s.faults]
    if not layers:
        return None
    recall = [scores.by_layer[name].recall or 0.0 for name in layers]
    top1 = [scores.by_layer[name].root_cause_top1 or 0.0 for name in layers]
    figure = Figure(figsize=(max(5.0, 1.1 * len(layers) + 2.0), 3.6))
    axes = figure.add_subplot()
    x = np.arange(len(layers))
    width = 0.38
    axes.bar(x - width / 2, recall, width, label="recall")
    axes.bar(x + width / 2, top1, width, label="top-1 root cause")
    axes.set_xticks(x, layers)
    axes.set_ylim(0.0, 1.2)  # headroom so the legend never covers a full bar
    axes.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes.set_ylabel("fraction of faults")
    axes.legend(loc="upper center", ncol=2)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def _latency_cdf(scores: Scores) -> Figure | None:
    series = {
        name: sorted(r.first_alert_s for r in s.per_fault if r.first_alert_s is not None)
        for name, s in scores.by_layer.items()
    }
    series = {name: values for name, values in series.items() if values}
    if not series:
        return None
    figure = Figure(figsize=(6.0, 3.8))
    axes = figure.add_subplot()
    for name, values in series.items():
        # Steps reach 1 only when every fault of the layer was detected: misses stay missing.
        faults = scores.by_layer[name].faults
        fractions = np.arange(1, len(values) + 1) / faults
        axes.step([0.0, *values], [0.0, *fractions], where="post", label=name)
    positive = [v for values in series.values() for v in values if v > 0]
    if positive and max(positive) / min(positive) > WIDE_RANGE:
        # symlog rather than log: a first alert at 0 s must still show.
        axes.set_xscale("symlog", linthresh=min(max(min(positive), 1e-3), 1.0))
    axes.set_xlabel("seconds from fault onset to first alert")
    axes.set_ylabel("fraction of faults detected")
    axes.set_ylim(0.0, 1.05)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _root_cause_plot(results: Sequence[FaultResult]) -> Figure | None:
    timed = [r for r in results if r.root_cause_s is not None]
    if not timed:
        return None
    labels = [f"{r.scenario} ({r.layer})" for r in timed]
    values = [r.root_cause_s or 0.0 for r in timed]
    figure = Figure(figsize=(6.5, max(2.0, 0.35 * len(timed) + 1.2)))
    axes = figure.add_subplot()
    y = np.arange(len(timed))
    axes.barh(y, values)
    axes.set_yticks(y, labels)
    axes.invert_yaxis()  # first fault at the top, as in the table
    axes.set_xlabel("seconds from fault onset to correct root cause")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _cell(text: str) -> str:
    """Text that cannot break a Markdown table row."""
    return text.replace("|", "\\|").replace("\n", " ")
