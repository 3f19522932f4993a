"""Reporting of `tlhub compare`: the tables printed and the plots written (compare.png,
curve.png), from the reports that :mod:`tlhub.compare.runs` returns and writes as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def strategies_table(report: dict[str, Any]) -> Any:
    """A rich table of a strategy comparison."""
    from rich.table import Table

    rows = report["rows"]
    by = report.get("by", "strategy")
    kind = rows[0].get("memory_kind", "peak memory") if rows else "peak memory"
    what = "Domain adaptation methods" if by == "method" else "Strategies"
    table = Table(title=f"{what} compared ({report['metric']}, {'higher' if report['greater_is_better'] else 'lower'} is better)")
    columns = [by, report["metric"].removeprefix("eval_"), "train time", "trainable params", f"{kind}"]
    if by == "method":  # a method that collapses to one class shows in its predictions
        columns.append("target predictions per class")
    for column in columns:
        table.add_column(column, justify="left" if column == by else "right")
    best = _best(rows, report["greater_is_better"])
    for row in rows:
        name = row[by] + (" (cached features)" if row.get("feature_cache_hit") is not None else "")
        value = "-" if row["metric"] is None else f"{row['metric']:.4f}" + (f" ± {row['metric_std']:.4f}" if row.get("seeds") else "")
        cells = [
            f"[bold]{name}[/bold]" if row is best else name,
            value,
            f"{row['train_time_s']:.1f} s",
            f"{_count(row['trainable_params'])} ({row['trainable_percent']:.2f}%)",
            f"{row['peak_memory_mb']:.0f} MB",
        ]
        if by == "method":
            counts = row.get("results", {}).get("target_predicted_classes") or {}
            cells.append(" ".join(f"{k}:{v}" for k, v in counts.items()))
        table.add_row(*cells)
    return table


def _best(rows: list[dict[str, Any]], greater: bool) -> dict[str, Any] | None:
    scored = [r for r in rows if r.get("metric") is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: r["metric"]) if greater else min(scored, key=lambda r: r["metric"])


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def plot_strategies(report: dict[str, Any], path: Path) -> None:
    """Four bar charts: main metric, train time, trainable parameters, peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r[report.get("by", "strategy")] for r in rows]
    panels = [
        (report["metric"].removeprefix("eval_"), [r["metric"] or 0.0 for r in rows], "{:.3f}"),
        ("train time (s)", [r["train_time_s"] for r in rows], "{:.1f}"),
        ("trainable parameters", [r["trainable_params"] for r in rows], "{:.3g}"),
        (f"{rows[0].get('memory_kind', 'peak memory')} (MB)" if rows else "peak memory (MB)", [r["peak_memory_mb"] for r in rows], "{:.0f}"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    colors = plt.get_cmap("tab10").colors
    for ax, (title, values, fmt) in zip(axes, panels):
        bars = ax.bar(names, values, color=colors[: len(names)])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
        for bar, value in zip(bars, values):
            ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        if title == "trainable parameters":
            ax.set_yscale("log")
    fig.suptitle(f"tlhub compare: same data, seed and budget per {report.get('by', 'strategy')}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _variant(row: dict[str, Any]) -> str:
    return "scratch (full)" if row["weights"] == "scratch" else row["strategy"]


def _point(row: dict[str, Any]) -> float:
    return row["samples_per_class"] if row.get("samples_per_class") is not None else row["fraction"]


def curve_table(report: dict[str, Any]) -> Any:
    """A rich table of the curves: one row per amount of data, one column per strategy
    (and scratch), each cell the metric (± its spread over seeds) with a bar."""
    from rich.table import Table

    name = report["metric"].removeprefix("eval_")
    variants = list(dict.fromkeys(_variant(r) for r in report["rows"]))
    by = {(_variant(r), _point(r)): r for r in report["rows"]}
    shots = report.get("x") == "samples_per_class"
    table = Table(title=f"Data efficiency ({name} on the validation split" + (f", mean ± std over {len(report['seeds'])} seeds)" if report.get("seeds") else ")"))
    table.add_column("per class" if shots else "fraction", justify="right")
    table.add_column("train rows", justify="right")
    for variant in variants:
        table.add_column(variant, justify="left")
    table.add_column("best", justify="left")
    greater = report["greater_is_better"]
    for point in report["samples_per_class"] if shots else report["fractions"]:
        cells = [f"{point:g}", str(next((by[(v, point)]["train_samples"] for v in variants if (v, point) in by), "-"))]
        scored = []
        for variant in variants:
            row = by.get((variant, point))
            cells.append(_bar(row))
            if row is not None and row["metric"] is not None:
                scored.append((row["metric"], variant))
        best = (max(scored) if greater else min(scored))[1] if scored else "-"
        table.add_row(*cells, best)
    return table


def _bar(row: dict[str, Any] | None, width: int = 10) -> str:
    """The metric (± std over seeds) and a bar of block characters (metrics in [0, 1] read as a plot)."""
    if row is None or row["metric"] is None:
        return "-"
    value = float(row["metric"])
    filled = int(round(max(0.0, min(1.0, value)) * width))
    spread = f"±{row['metric_std']:.3f} " if row.get("seeds") else ""
    return f"{value:.3f} {spread}{'█' * filled}{'·' * (width - filled)}"


def plot_curve(report: dict[str, Any], path: Path) -> None:
    """Main metric against training rows (log scale), one line per strategy and for scratch,
    with error bars (the standard deviation over seeds) when there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for variant in dict.fromkeys(_variant(r) for r in report["rows"]):
        rows = sorted((r for r in report["rows"] if _variant(r) == variant), key=_point)
        xs = [r["train_samples"] for r in rows]
        ys = [r["metric"] for r in rows]
        style = "s--" if variant.startswith("scratch") else "o-"
        ax.errorbar(xs, ys, yerr=[r.get("metric_std") or 0.0 for r in rows], fmt=style, capsize=3, label=variant)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xscale("log")
    ticks = sorted({r["train_samples"] for r in report["rows"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel(report["metric"].removeprefix("eval_"))
    ax.set_title("Data efficiency: which strategy wins at which data size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
