"""Forecasting: the next ``data.prediction_length`` steps of each series from the
``data.context_length`` before, scored by MSE, MAE and MASE in the series' own units, beside
the seasonal-naive forecast (the last ``data.seasonality`` steps repeated) as the floor a
model must beat: ``eval_mse`` against ``eval_naive_mse``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlhub.tasks.base import TASKS, Task, first

if TYPE_CHECKING:
    import torch

    from tlhub.config import RunConfig


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The seasonal-naive forecast of (batch, steps, channels): the last `season` steps repeated."""
    last = history[:, -season:]
    reps = -(-horizon // season)
    return np.tile(last, (1, reps, 1))[:, :horizon]


def forecast_scores(forecast: np.ndarray, truth: np.ndarray, history: np.ndarray, season: int) -> dict[str, float]:
    """MSE, MAE and MASE of forecasts (batch, horizon, channels), in the series' own units.
    MASE divides each window's and channel's MAE by the in-sample MAE of the seasonal-naive
    forecast over its history (the M4 competition's definition), then averages."""
    errors = np.abs(forecast - truth)
    scale = np.abs(history[:, season:] - history[:, :-season]).mean(1)  # (batch, channels)
    scale = np.where(scale > 0, scale, np.nan)
    mase = np.nanmean(errors.mean(1) / scale) if np.isfinite(scale).any() else float("nan")
    return {"mse": float(((forecast - truth) ** 2).mean()), "mae": float(errors.mean()), "mase": float(mase)}


@TASKS.register("forecasting")
class Forecasting(Task):
    name = "forecasting"
    main_metric = ("mse", False)
    metrics_read_inputs = True

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        season = cfg.data.seasonality

        def compute(pred: Any) -> dict[str, float]:
            forecast, truth, history = np.asarray(first(pred.predictions)), np.asarray(pred.label_ids), np.asarray(pred.inputs)
            naive = forecast_scores(seasonal_naive(history, truth.shape[1], season), truth, history, season)
            return {**forecast_scores(forecast, truth, history, season), **{f"naive_{k}": v for k, v in naive.items()}}

        return compute

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        forecast = run.model(**batch).prediction_outputs.float().cpu().numpy()  # (batch, horizon, channels)
        history = batch["past_values"].float().cpu().numpy()
        columns = getattr(run.processor, "columns", None) or [f"series {i + 1}" for i in range(forecast.shape[-1])]
        return [
            {"input": name, "forecast": {c: values[:, i].tolist() for i, c in enumerate(columns)},
             "history": {c: past[:, i].tolist() for i, c in enumerate(columns)}}
            for name, values, past in zip(inputs, forecast, history)
        ]  # fmt: skip

    def plot(self, rows: list[dict[str, Any]], path: Path) -> None:
        """Each input's forecast (dashed) after the history the model read, one panel per series."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [(row["input"], column) for row in rows for column in row["forecast"]]
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
        for ax, (row, column) in zip(axes[:, 0], [(r, c) for r in rows for c in r["forecast"]]):
            past, future = row["history"][column], row["forecast"][column]
            ax.plot(range(len(past)), past, label="history")
            ax.plot(range(len(past) - 1, len(past) + len(future)), [past[-1], *future], "--", label="forecast")
            ax.set_title(f"{row['input']}: {column}")
            ax.legend(loc="upper left")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def describe(self, row: dict[str, Any]) -> str:
        return "\n".join(f"{row['input']}\t{column}\t{','.join(f'{v:.6g}' for v in values)}" for column, values in row["forecast"].items())
