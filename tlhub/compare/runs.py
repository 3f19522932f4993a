"""Running `tlhub compare`: one config trained per strategy, per domain-adaptation method or
per amount of data (and seed), each run a finetune() in this process; the reports written as
compare.json / curve.json and plotted by :mod:`tlhub.compare.report`."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlhub.compare.report import plot_curve, plot_strategies
from tlhub.config import RunConfig, build, merge, own_strategy_keys, parse_overrides, read_yaml
from tlhub.domain.settings import DOMAIN_METHODS
from tlhub.errors import ConfigError, TlhubError, closest
from tlhub.io import atomic_write_json
from tlhub.strategies import DEFAULT_STRATEGY, STRATEGIES
from tlhub.tasks import get_task

BASELINES = ("scratch", "none")

DEFAULT_STRATEGIES = ("feature_extraction", "partial", "lora", "full")

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


def main_metric(mapping: dict[str, Any]) -> tuple[str, bool]:
    """The metric compare ranks by, and whether larger is better: the task's for the run's
    problem type (multi-label: eval_f1_micro; regression: eval_mse, lower first), decided from
    the training data where data.problem_type is auto, as the runs will decide it."""
    from tlhub.data import load_data
    from tlhub.modalities import get_modality

    cfg = build(RunConfig, {k: v for k, v in mapping.items() if k != "strategy"})  # the strategies' keys are checked per run
    task = get_task(cfg.task)
    if task.problem_types and cfg.data.problem_type == "auto":
        load_data(cfg, get_modality(cfg.modality))  # writes the type it decides into cfg.data.problem_type
    name, greater = task.best_metric(cfg)
    return f"eval_{name}", greater


def default_output_dir(mapping: dict[str, Any]) -> Path:
    try:
        return Path(mapping["training"]["output_dir"]) / "compare"
    except (KeyError, TypeError):
        raise ConfigError("training.output_dir: missing required key: where the runs are written (or pass --output-dir)") from None


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
    metric, greater = main_metric(base)
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
        own = with_strategy(base, dict(base.get("strategy") or {}).get("name", DEFAULT_STRATEGY), None)  # the strategy's own keys
        mapping = merge(own, {"domain_adaptation": {"method": name, "compare_source_only": False}})
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
    metric, greater = main_metric(base)
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


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text)
