"""Each private name of another library that tlhub uses (tlhub.compat), tested on its own: a
release that renames one fails here, by name."""

from __future__ import annotations

import datasets

from tlhub.compat import dataset_fingerprint, save_checkpoint


def test_dataset_fingerprint_follows_content_and_transforms() -> None:
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "labels": [0, 1, 0]})
    same = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "labels": [0, 1, 0]})
    assert isinstance(dataset_fingerprint(ds), str) and len(dataset_fingerprint(ds)) >= 16
    assert dataset_fingerprint(ds.select([0, 1])) != dataset_fingerprint(ds)  # sampling changes it
    assert dataset_fingerprint(ds.select([0, 1])) == dataset_fingerprint(same.select([0, 1]))  # deterministic
    assert dataset_fingerprint(ds.map(lambda b: {"labels": [1 - x for x in b["labels"]]}, batched=True)) != dataset_fingerprint(ds)


def test_save_checkpoint_writes_the_trainers_own_complete_checkpoint(tmp_path) -> None:  # noqa: ANN001
    import torch
    from torch import nn
    from transformers import Trainer, TrainingArguments

    from tlhub.rundir import complete_checkpoint

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": ((self.w(x).squeeze(-1) - labels) ** 2).mean()}

    rows = [{"x": torch.tensor([float(i), 1.0]), "labels": torch.tensor(float(i))} for i in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                             per_device_train_batch_size=2, disable_tqdm=True)  # fmt: skip
    trainer = Trainer(model=Tiny(), args=args, train_dataset=rows)
    trainer.train()
    save_checkpoint(trainer)
    folder = tmp_path / "checkpoint-1"
    assert complete_checkpoint(folder)
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {p.name for p in folder.iterdir()}
