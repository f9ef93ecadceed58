"""The ``/atelier stats`` chart: 30 days of a server's jobs, spend and time to result, as one PNG.

matplotlib with its Agg canvas on a ``Figure`` of our own (never pyplot's global state,
so renders in worker threads cannot meet), imported on first use so a bot that is never
asked for a chart does not carry it. Call ``render_stats_chart`` in a worker thread.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence

from bot.core.money import usd_float
from bot.core.records import DayStats

WIDTH_IN, HEIGHT_IN, DPI = 9.0, 7.5, 100  # 900×750 pixels
OUTCOME_COLOURS = (("succeeded", "#3ba55d"), ("failed", "#ed4245"), ("cancelled", "#99aab5"))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (not empty)."""
    rank = max(1, round(fraction * len(values) + 0.5 - 1e-9))
    return values[min(rank, len(values)) - 1]


def render_stats_chart(days: Sequence[DayStats], title: str) -> bytes:
    """A PNG of jobs per day by outcome, spend per day, and p50/p95 time to result (CPU work: use a thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    jobs_ax, spend_ax, time_ax = figure.subplots(3, 1, sharex=True, height_ratios=(3, 2, 2))
    labels = [d.day[5:] for d in days]  # MM-DD
    x = list(range(len(days)))

    bottom = [0.0] * len(days)
    for outcome, colour in OUTCOME_COLOURS:
        values = [float(getattr(d, outcome)) for d in days]
        jobs_ax.bar(x, values, bottom=bottom, color=colour, label=outcome, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    jobs_ax.set_ylabel("jobs")
    jobs_ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize="small", ncols=3, frameon=False)
    jobs_ax.set_title(title, loc="left", fontsize="medium")

    spend_ax.bar(x, [usd_float(d.spend) for d in days], color="#5865f2", width=0.8)
    spend_ax.set_ylabel("spend ($)")

    p50 = [percentile(d.durations, 0.5) if d.durations else float("nan") for d in days]
    p95 = [percentile(d.durations, 0.95) if d.durations else float("nan") for d in days]
    time_ax.plot(x, p50, marker="o", markersize=3, color="#3ba55d", label="p50")
    time_ax.plot(x, p95, marker="o", markersize=3, color="#faa61a", label="p95")
    time_ax.set_ylabel("time to result (s)")
    time_ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize="small", ncols=2, frameon=False)
    time_ax.set_xticks(x[::3], labels[::3], fontsize="small")
    time_ax.set_xlim(-0.6, len(days) - 0.4)
    for ax in (jobs_ax, spend_ax, time_ax):
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def summary(days: Sequence[DayStats]) -> tuple[int, int, float | None]:
    """Jobs, spend (micro-dollars) and the median time to result over ``days`` (for the text beside the chart)."""
    durations = sorted(d for day in days for d in day.durations)
    jobs = sum(d.succeeded + d.failed + d.cancelled for d in days)
    spend = sum(d.spend for d in days)
    return jobs, spend, statistics.median(durations) if durations else None
