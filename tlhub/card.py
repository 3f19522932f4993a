"""The model card of a run folder: ``README.md`` with Hub metadata and the results.

The Hub, ``huggingface_hub.ModelCard`` and people read a model folder's ``README.md``:
YAML metadata (library, base model, data, pipeline tag, tags, and the evaluation results
as a ``model-index``), then a body with the results table, the command and config that
made the run, and how to load it. transformers' Trainer writes a card of this kind
(``create_model_card``); this one knows tlhub's strategies and results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from tlhub.strategies import get_strategy
from tlhub.tasks import get_task

if TYPE_CHECKING:
    from tlhub.config import RunConfig

# all_results.json keys that are measurements of the model (not timings or counts)
SKIPPED_SUFFIXES = ("_runtime", "_per_second", "_samples", "_loss")


def metric_rows(results: dict[str, Any]) -> list[tuple[str, float]]:
    """(name, value) for every evaluation metric of the run: eval_*, test_*, target_*."""
    rows = []
    for key, value in sorted(results.items()):
        if not key.startswith(("eval_", "test_", "target_", "source_only_target_")) or key.endswith(SKIPPED_SUFFIXES):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key, float(value)))
    return rows


def model_card(cfg: RunConfig, results: dict[str, Any], base_model: str) -> str:
    """The text of ``README.md`` for a finished run."""
    strategy, task = get_strategy(cfg.strategy.name), get_task(cfg.task)
    pipeline_tag = task.pipeline_tags.get(cfg.modality)
    rows = metric_rows(results)
    datasets = [d for d in (cfg.data.train, cfg.data.validation, cfg.data.test) if d]
    metadata: dict[str, Any] = {
        "library_name": strategy.library,
        "base_model": base_model,
        "datasets": list(dict.fromkeys(datasets)),
        "pipeline_tag": pipeline_tag,
        "tags": ["tlhub", "transfer-learning", cfg.modality, f"strategy-{cfg.strategy.name}"]
        + ([f"domain-adaptation-{cfg.domain_adaptation.method}"] if cfg.domain_adaptation else []),
        "metrics": sorted({name.split("_", 1)[1] for name, _ in rows if name.startswith("eval_")}),
        "model-index": [
            {
                "name": cfg.output_dir.name,
                "results": [
                    {
                        "task": {"type": pipeline_tag or cfg.task, "name": cfg.task},
                        "dataset": {"name": str(split_source), "type": str(split_source), "split": split},
                        "metrics": [
                            {"type": name.split("_", 1)[1], "value": value, "name": name}
                            for name, value in rows
                            if name.startswith(f"{prefix}_") and not name.startswith("source_only_")
                        ],
                    }
                    for prefix, split, split_source in (
                        ("eval", "validation", cfg.data.validation or cfg.data.train),
                        ("test", "test", cfg.data.test),
                        ("target", "target", cfg.domain_adaptation.target if cfg.domain_adaptation else None),
                    )
                    if split_source and any(name.startswith(f"{prefix}_") for name, _ in rows)
                ],
            }
        ],
    }
    table = "\n".join(f"| {name} | {value:.4f} |" for name, value in rows)
    params = f"{results.get('trainable_params', 0):,} of {results.get('total_params', 0):,}"
    if pipeline_tag:
        load = strategy.card_loader(cfg, task.card_code(cfg, pipeline_tag))
    else:
        load = "import tlhub\nrun = tlhub.load_run(RUN_DIR)\nprint(tlhub.predict(run, [...]))"
    body = f"""
# {cfg.output_dir.name}

`{base_model}` adapted by [tlhub](https://pypi.org/project/tlhub/) with the **{cfg.strategy.name}** strategy
({cfg.modality}, {cfg.task}); {params} parameters trained.

## Results

| metric | value |
| --- | ---: |
{table}

## How it was made

```bash
tlhub train config.yaml   # config.yaml is in this folder
```

```yaml
{yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()}
```

## How to load it

```python
RUN_DIR = "{cfg.output_dir}"
{load}
```

or `tlhub predict RUN_DIR INPUT...` and `tlhub evaluate RUN_DIR --data FILE`.
"""
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n" + body
