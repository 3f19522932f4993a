"""`tlhub compare`: strategies side by side, and data-efficiency curves.

Two questions transfer learning has to answer with numbers:

- Which strategy? ``--strategies feature_extraction,partial,lora,full`` trains the
  same config (same data, split, seed and training budget) once per strategy and
  reports the main metric, train time, trainable parameters and peak memory
  (``compare.json``, a table, ``compare.png``).
- What does pretraining buy? ``--fractions 0.05,0.1,0.25,0.5,1.0 --baseline scratch``
  trains at each fraction of the training split (stratified, seeded, nested: see
  ``data.train_fraction``) with the pretrained weights and with the same
  architecture from random weights, on the same validation split
  (``curve.json``, a table, ``curve.png``).

Runs go to ``OUTPUT/<strategy>`` and ``OUTPUT/curve/<pretrained|scratch>-<fraction>``,
where OUTPUT is ``--output-dir`` or ``training.output_dir/compare``. Train time is the
Trainer's ``train_runtime`` plus, for cached feature extraction, the time spent
computing (or reading) the features. Peak memory is the CUDA peak allocation on a
GPU, else the peak resident set size (RSS) of the process sampled during the run.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlhub.config import RunConfig, build, merge, own_strategy_keys, parse_overrides, read_yaml
from tlhub.domain.settings import DOMAIN_METHODS
from tlhub.errors import ConfigError, TlhubError, closest
from tlhub.io import atomic_write_json
from tlhub.strategies import DEFAULT_STRATEGY, STRATEGIES
from tlhub.tasks import get_task

BASELINES = ("scratch", "none")
DEFAULT_STRATEGIES = ("feature_extraction", "partial", "lora", "full")


# --------------------------------------------------------------------------- arguments


def parse_names(text: str, flag: str, noun: str, known: list[str] | tuple[str, ...], example: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"] for `flag`; an unknown or repeated name is a TlhubError naming it."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise TlhubError(f"{flag}: give a comma-separated list, e.g. {example}")
    for name in names:
        if name not in known:
            raise TlhubError(f"{flag}: unknown {noun} '{name}'{closest(name, known)}; choose from: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise TlhubError(f"{flag}: '{text}' names a {noun} twice")
    return names


def parse_strategies(text: str) -> list[str]:
    """``"lora,full"`` -> ["lora", "full"]; an unknown name is a TlhubError naming it."""
    return parse_names(text, "--strategies", "strategy", STRATEGIES.names(), "feature_extraction,partial,lora,full")


def parse_learning_rates(text: str) -> dict[str, float]:
    """``--learning-rates feature_extraction=2e-2,lora=1e-3``: a learning rate per strategy
    (``scratch``: the from-scratch baseline), since a head alone and a whole network train
    best at rates two or three orders of magnitude apart."""
    known = set(STRATEGIES.names()) | {"scratch"}
    rates: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, value = item.partition("=")
        if name not in known:
            raise TlhubError(f"--learning-rates: unknown strategy '{name}'{closest(name, sorted(known))}; choose from: {', '.join(sorted(known))}")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not rate > 0:
            raise TlhubError(f"--learning-rates: '{item}' needs a positive rate, e.g. {name}=1e-3")
        rates[name] = rate
    return rates


def with_strategy(base: dict[str, Any], name: str, rates: dict[str, float] | None, **sections: Any) -> dict[str, Any]:
    """`base` with strategy `name` (and its rate from --learning-rates, if given) and `sections` merged
    in; of base's strategy keys, those `name` reads (a config may hold every strategy's keys)."""
    extra: dict[str, Any] = {"strategy": {"name": name}, **sections}
    rate = (rates or {}).get("scratch" if sections.get("model", {}).get("pretrained") is False else name)
    if rate is not None:
        extra["training"] = {"learning_rate": rate}
    own = {**base, "strategy": own_strategy_keys(dict(base.get("strategy") or {}), name)}
    return merge(own, extra)


def parse_fractions(text: str) -> list[float]:
    """``"0.1,0.5,1"`` -> [0.1, 0.5, 1.0], sorted; each must be in (0, 1]."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise TlhubError(f"--fractions: '{item}' is not a number; give fractions of the training data in (0, 1], e.g. 0.1,0.5,1.0") from None
        if not 0.0 < value <= 1.0:
            raise TlhubError(f"--fractions: {item} is not in (0, 1]; give fractions of the training data, e.g. 0.1,0.5,1.0")
        values.append(value)
    if not values:
        raise TlhubError("--fractions: give a comma-separated list, e.g. 0.05,0.1,0.25,0.5,1.0")
    return sorted(set(values))


def parse_ints(text: str, flag: str, example: str, minimum: int) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2] in the order given; each a whole number >= `minimum`."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not item.lstrip("-").isdigit() or int(item) < minimum:
            raise TlhubError(f"{flag}: '{item}' is not a whole number of at least {minimum}; e.g. {example}")
        values.append(int(item))
    if not values:
        raise TlhubError(f"{flag}: give a comma-separated list, e.g. {example}")
    if len(set(values)) != len(values):
        raise TlhubError(f"{flag}: '{text}' names a value twice")
    return values


# --------------------------------------------------------------------------- measuring


@contextmanager
def peak_memory() -> Iterator[dict[str, Any]]:
    """Measure the peak memory of the block: CUDA max allocated, else sampled process RSS.

    Yields a dict that holds ``peak_memory_mb`` and ``memory_kind`` after the block.
    """
    import psutil
    import torch

    out: dict[str, Any] = {}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        yield out
        out.update(peak_memory_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1), memory_kind="cuda max allocated")
        return
    process = psutil.Process()
    peak = [process.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], process.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        out.update(peak_memory_mb=round(peak[0] / 2**20, 1), memory_kind="peak RSS")


def base_mapping(config: str | Path | dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """The config as a mapping (YAML file or mapping) with the dotted overrides applied."""
    data = read_yaml(config) if isinstance(config, (str, Path)) else dict(config)
    return merge(data, parse_overrides(list(overrides or [])))


def train_one(mapping: dict[str, Any]) -> dict[str, Any]:
    """Train one config; return its results with wall time, train time and peak memory."""
    from tlhub.pipeline import finetune

    # compare's run folders are its own: a second compare with other settings replaces them
    cfg: RunConfig = build(RunConfig, merge({"training": {"overwrite_output_dir": True}}, mapping))
    gc.collect()
    start = time.perf_counter()
    with peak_memory() as memory:
        results = finetune(cfg)
    results["wall_s"] = round(time.perf_counter() - start, 2)
    results["train_time_s"] = round(
        results.get("train_runtime", 0.0) + results.get("feature_cache_seconds", 0.0) + results.get("teacher_train_runtime", 0.0), 2
    )
    results.update(memory)
    return results


def train_seeds(mapping: dict[str, Any], out: Path, seeds: list[int] | None, metric: str) -> dict[str, Any]:
    """Train `mapping` once per seed (the data draw and the training seed) into `out`
    (``out/seed-N`` with several seeds); return one row: the metric's mean and standard
    deviation over the seeds, the first run's summary with mean times, and every run."""
    import statistics

    runs = []
    for seed in seeds or [None]:
        changes: dict[str, Any] = {"training": {"output_dir": str(out if seed is None else out / f"seed-{seed}")}}
        if seed is not None:
            changes = merge(changes, {"data": {"seed": seed}, "training": {"seed": seed}})
        runs.append(train_one(merge(mapping, changes)))
    values = [r[metric] for r in runs if r.get(metric) is not None]
    row = _summary(runs[0])
    for key in ("train_time_s", "wall_s"):
        row[key] = round(statistics.mean(r[key] for r in runs), 2)
    row.update(
        metric=statistics.mean(values) if values else None,
        metric_std=statistics.pstdev(values) if len(values) > 1 else 0.0,
        seeds=seeds,
        runs=[
            {"seed": seed, "metric": r.get(metric), "train_time_s": r["train_time_s"],
             **({"target_predicted_classes": r["target_predicted_classes"]} if "target_predicted_classes" in r else {})}
            for seed, r in zip(seeds or [None], runs)
        ],  # fmt: skip
    )
    return row


def _main_metric(task: str) -> tuple[str, bool]:
    name, greater = get_task(task).main_metric
    return f"eval_{name}", greater


def default_output_dir(mapping: dict[str, Any]) -> Path:
    try:
        return Path(mapping["training"]["output_dir"]) / "compare"
    except (KeyError, TypeError):
        raise ConfigError("training.output_dir: missing required key: where the runs are written (or pass --output-dir)") from None


# --------------------------------------------------------------------------- strategies


def compare_strategies(
    config: str | Path | dict[str, Any],
    strategies: list[str],
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    console: Any = None,
    seeds: list[int] | None = None,
    rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Train `config` once per strategy (and seed), at `rates` where given; write compare.json
    and compare.png; return the report."""
    base = base_mapping(config, overrides)
    out = Path(output_dir) if output_dir else default_output_dir(base)
    task = base.get("task", "classification")
    metric, greater = _main_metric(task)
    rows = []
    for i, name in enumerate(strategies, 1):
        _say(console, f"[bold]compare {i}/{len(strategies)}[/bold]: strategy {name}")
        rows.append({"strategy": name, **train_seeds(with_strategy(base, name, rates), out / name, seeds, metric)})
    report = {"kind": "strategies", "metric": metric, "greater_is_better": greater, "seeds": seeds, "rows": rows, "output_dir": str(out)}
    atomic_write_json(out / "compare.json", report)
    plot_strategies(report, out / "compare.png")
    report["plot"] = str(out / "compare.png")
    return report


def parse_methods(text: str) -> list[str]:
    """``"source_only,mcc"`` -> ["source_only", "mcc"]; an unknown name is a TlhubError naming it."""
    return parse_names(text, "--methods", "method", DOMAIN_METHODS, "source_only,dann,cdan,mcc,self_training")


def compare_methods(
    config: str | Path | dict[str, Any],
    methods: list[str],
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    console: Any = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Train `config` once per domain-adaptation method (and seed) on the same data, split
    and seed; write compare.json and compare.png of the target accuracy; return the report.

    Each run is one method alone (``compare_source_only: false``): ``source_only`` in
    `methods` is the baseline, trained like the others.
    """
    base = base_mapping(config, overrides)
    if not isinstance(base.get("domain_adaptation"), dict) or not base["domain_adaptation"].get("target"):
        raise ConfigError("domain_adaptation.target: --methods compares domain adaptation methods; the config needs a domain_adaptation section with a target")
    out = Path(output_dir) if output_dir else default_output_dir(base)
    rows = []
    for i, name in enumerate(methods, 1):
        _say(console, f"[bold]compare {i}/{len(methods)}[/bold]: method {name}")
        mapping = merge(base, {"domain_adaptation": {"method": name, "compare_source_only": False}})
        row = train_seeds(mapping, out / name, seeds, "target_accuracy")
        rows.append({"method": name, "strategy": name, **{k: v for k, v in row.items() if k != "strategy"}})
    report = {"kind": "methods", "by": "method", "metric": "target_accuracy", "greater_is_better": True, "seeds": seeds,
              "rows": rows, "output_dir": str(out)}  # fmt: skip
    atomic_write_json(out / "compare.json", report)
    plot_strategies(report, out / "compare.png")
    report["plot"] = str(out / "compare.png")
    return report


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "train_time_s",
        "wall_s",
        "train_runtime",
        "feature_cache_seconds",
        "feature_cache_hit",
        "trainable_params",
        "total_params",
        "trainable_percent",
        "peak_memory_mb",
        "memory_kind",
        "train_samples",
        "eval_samples",
    )
    summary = {k: results[k] for k in keys if k in results}
    summary["results"] = {k: v for k, v in results.items() if k.startswith(("eval_", "test_", "target_"))}
    return summary


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


# --------------------------------------------------------------------------- data efficiency


def data_efficiency(
    config: str | Path | dict[str, Any],
    fractions: list[float] | None,
    baseline: str = "scratch",
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    console: Any = None,
    strategies: list[str] | None = None,
    seeds: list[int] | None = None,
    shots: list[int] | None = None,
    rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Train at each amount of training data with the pretrained weights (one curve per
    strategy) and from scratch; write curve.json and curve.png; return the report.

    The amounts are `fractions` of the training split (``data.train_fraction``) or
    `shots`, labelled rows per class (``data.samples_per_class``); with `seeds`, each
    point is the mean (and standard deviation) over that many draws.
    """
    if baseline not in BASELINES:
        raise TlhubError(f"--baseline: unknown baseline '{baseline}'{closest(baseline, BASELINES)}; choose from: {', '.join(BASELINES)}")
    base = base_mapping(config, overrides)
    out = Path(output_dir) if output_dir else default_output_dir(base)
    task = base.get("task", "classification")
    metric, greater = _main_metric(task)
    names = strategies or [dict(base.get("strategy") or {}).get("name", "full")]
    variants = [("pretrained", True, name) for name in names]
    if baseline == "scratch":
        # Random weights learn nothing frozen: the baseline trains every weight.
        variants.append(("scratch", False, "full"))
    key, points = ("samples_per_class", shots) if shots else ("train_fraction", fractions or [1.0])
    rows = []
    total = len(points) * len(variants)
    step = 0
    for point in points:
        for label, pretrained, strategy_name in variants:
            step += 1
            amount = f"{point} per class" if shots else f"{point:g} of the training data"
            _say(console, f"[bold]curve {step}/{total}[/bold]: {label} {strategy_name}, {amount}")
            mapping = with_strategy(base, strategy_name, rates, model={"pretrained": pretrained}, data={key: point})
            folder = out / "curve" / f"{label}-{strategy_name}-{point:g}{'-shot' if shots else ''}"
            row = train_seeds(mapping, folder, seeds, metric)
            rows.append({"weights": label, "strategy": strategy_name, "fraction": None if shots else point,
                         "samples_per_class": point if shots else None, **row})  # fmt: skip
    report = {
        "kind": "data_efficiency",
        "metric": metric,
        "greater_is_better": greater,
        "baseline": baseline,
        "x": key,
        "fractions": None if shots else points,
        "samples_per_class": points if shots else None,
        "seeds": seeds,
        "rows": rows,
        "output_dir": str(out),
    }
    atomic_write_json(out / "curve.json", report)
    plot_curve(report, out / "curve.png")
    report["plot"] = str(out / "curve.png")
    return report


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


# --------------------------------------------------------------------------- the command


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text)


def run_compare(
    config: str | Path,
    overrides: list[str] | None = None,
    strategies: str | None = None,
    fractions: str | None = None,
    baseline: str = "scratch",
    output_dir: str | Path | None = None,
    seeds: str | None = None,
    shots: str | None = None,
    learning_rates: str | None = None,
    methods: str | None = None,
) -> dict[str, Any]:
    """What `tlhub compare` does: check the arguments first, then run, print and plot.

    Without --fractions or --samples-per-class: the strategies side by side. With one of
    them: the data-efficiency curves, one per strategy given (default: the config's).
    """
    from rich.console import Console

    console = Console()
    curve = bool(fractions or shots)
    if fractions and shots:
        raise TlhubError("--fractions, --samples-per-class: give one of them (fractions of the data, or rows per class)")
    names = parse_strategies(strategies) if strategies else (None if curve else list(DEFAULT_STRATEGIES))
    points = parse_fractions(fractions) if fractions else None
    per_class = parse_ints(shots, "--samples-per-class", "8,16,32", 1) if shots else None
    draws = parse_ints(seeds, "--seeds", "0,1,2,3,4", 0) if seeds else None
    rates = parse_learning_rates(learning_rates) if learning_rates else None
    method_names = parse_methods(methods) if methods else None
    if method_names and (curve or strategies):
        raise TlhubError("--methods: compares domain adaptation methods on the config's strategy; give it without --strategies, --fractions or --samples-per-class")
    if baseline not in BASELINES:
        raise TlhubError(f"--baseline: unknown baseline '{baseline}'{closest(baseline, BASELINES)}; choose from: {', '.join(BASELINES)}")
    base = base_mapping(config, overrides)
    for name in names or [dict(base.get("strategy") or {}).get("name", DEFAULT_STRATEGY)]:  # a bad config fails before any training
        build(RunConfig, with_strategy(base, name, rates))
    out: dict[str, Any] = {}
    if method_names:
        report = compare_methods(config, method_names, overrides, output_dir, console, draws)
        console.print(strategies_table(report))
        console.print(f"Wrote {Path(report['output_dir']) / 'compare.json'} and {report['plot']}")
        out["methods"] = report
        return out
    if names and not curve:
        report = compare_strategies(config, names, overrides, output_dir, console, draws, rates)
        console.print(strategies_table(report))
        console.print(f"Wrote {Path(report['output_dir']) / 'compare.json'} and {report['plot']}")
        out["strategies"] = report
    if curve:
        report = data_efficiency(config, points, baseline, overrides, output_dir, console, names, draws, per_class, rates)
        console.print(curve_table(report))
        console.print(f"Wrote {Path(report['output_dir']) / 'curve.json'} and {report['plot']}")
        out["curve"] = report
    return out


__all__ = [
    "compare_methods",
    "compare_strategies",
    "curve_table",
    "data_efficiency",
    "parse_fractions",
    "parse_ints",
    "parse_learning_rates",
    "parse_methods",
    "parse_strategies",
    "peak_memory",
    "plot_curve",
    "plot_strategies",
    "run_compare",
    "strategies_table",
]
