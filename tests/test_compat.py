"""Each private name of another library that tlhub uses (tlhub.compat), tested on its own: a
release that renames one fails here, by name."""

from __future__ import annotations

import datasets

from tlhub.compat import dataset_fingerprint


def test_dataset_fingerprint_follows_content_and_transforms() -> None:
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "labels": [0, 1, 0]})
    same = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "labels": [0, 1, 0]})
    assert isinstance(dataset_fingerprint(ds), str) and len(dataset_fingerprint(ds)) >= 16
    assert dataset_fingerprint(ds.select([0, 1])) != dataset_fingerprint(ds)  # sampling changes it
    assert dataset_fingerprint(ds.select([0, 1])) == dataset_fingerprint(same.select([0, 1]))  # deterministic
    assert dataset_fingerprint(ds.map(lambda b: {"labels": [1 - x for x in b["labels"]]}, batched=True)) != dataset_fingerprint(ds)
