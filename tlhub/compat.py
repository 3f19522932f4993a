"""The private names of other libraries that tlhub relies on, in one place.

Each is used here only, says why no public way does the same, and has a test in
tests/test_compat.py, so that a release that renames one fails there, by name, instead of
deep inside a run. transformers, peft and accelerate are used through their public API alone.
"""

from __future__ import annotations

import datasets


def dataset_fingerprint(ds: datasets.Dataset) -> str:
    """The fingerprint `datasets` keeps for a dataset: a hash of its source and of every
    transform applied to it (sampling, label encoding), which the feature cache keys on.
    datasets exposes it only as ``Dataset._fingerprint``; recomputing one
    (``datasets.fingerprint.generate_fingerprint``) hashes the whole table instead."""
    return ds._fingerprint


def save_checkpoint(trainer: object) -> None:
    """The Trainer's own checkpoint of its current step (``checkpoint-N``: model, optimizer,
    scheduler, RNG states, trainer_state.json last), as its training loop writes one. Used when
    a signal arrived after the loop's last step boundary (tlhub.preemption); the public
    ``Trainer.save_model`` writes the model alone, which a resume cannot continue from.
    Every process calls it, as in the loop."""
    trainer._save_checkpoint(trainer.model_wrapped, trial=None)  # type: ignore[attr-defined]
