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

The package: :mod:`tlhub.compare.runs` trains and writes the reports, :mod:`tlhub.compare.report`
prints and plots them, and :func:`run_compare` is the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlhub.compare.report import curve_table, plot_curve, plot_strategies, strategies_table
from tlhub.compare.runs import (
    BASELINES,
    DEFAULT_STRATEGIES,
    base_mapping,
    compare_methods,
    compare_strategies,
    data_efficiency,
    parse_fractions,
    parse_ints,
    parse_learning_rates,
    parse_methods,
    parse_strategies,
    peak_memory,
    with_strategy,
)
from tlhub.config import RunConfig, build
from tlhub.errors import TlhubError, closest
from tlhub.strategies import DEFAULT_STRATEGY


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
    running = names if names and not method_names else [dict(base.get("strategy") or {}).get("name", DEFAULT_STRATEGY)]
    for name in running:  # each strategy that will run, with its own keys: a bad config fails before any training
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
