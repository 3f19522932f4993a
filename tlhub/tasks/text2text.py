"""Text to text (T5-style encoder-decoders): the target text is generated, scored by exact
match and ROUGE."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tlhub.tasks.base import TASKS, Task, combined, first

if TYPE_CHECKING:
    import torch

    from tlhub.config import RunConfig


def decode_generated(processor: Any, pred: Any, ctc: bool = False) -> tuple[list[str], list[str]]:
    """(predictions, references) as text from an EvalPrediction of token ids (or CTC logits),
    the -100 padding of labels and generations read as the pad token."""
    import numpy as np

    tokenizer = getattr(processor, "tokenizer", processor)
    ids = first(pred.predictions)
    if ids.ndim == 3:  # CTC logits
        ids = ids.argmax(-1)
    ids = np.where(ids < 0, tokenizer.pad_token_id, ids)
    labels = np.where(pred.label_ids < 0, tokenizer.pad_token_id, pred.label_ids)
    predictions = processor.batch_decode(ids) if ctc else processor.batch_decode(ids, skip_special_tokens=True)
    references = processor.batch_decode(labels, skip_special_tokens=True, **({"group_tokens": False} if ctc else {}))
    return predictions, references


@TASKS.register("text2text")
class TextToText(Task):
    name = "text2text"
    generation_settings = True  # generates: Seq2SeqTrainingArguments' generation keys apply
    metrics = ("exact_match", "rouge")
    main_metric = ("rougeL", True)
    pipeline_tags = {"text": "text2text-generation"}

    def generates(self, cfg: RunConfig, source: str | None = None) -> bool:
        return True

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        metrics = combined(self.metrics)

        def compute(pred: Any) -> dict[str, float]:
            predictions, references = decode_generated(processor, pred)
            return metrics.compute(predictions=predictions, references=references)

        return compute

    def card_code(self, cfg: RunConfig, pipeline_tag: str) -> str:
        # transformers 5 has no text2text pipeline: the auto classes, with the prefix the model was trained with
        return (
            "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
            "tokenizer = AutoTokenizer.from_pretrained(RUN_DIR)\nmodel = AutoModelForSeq2SeqLM.from_pretrained(RUN_DIR)\n\n"
            "def generate(text):\n"
            f"    inputs = tokenizer([{cfg.data.source_prefix!r} + text], return_tensors='pt')  # the prefix it was trained with\n"
            f"    return tokenizer.decode(model.generate(**inputs, max_length={cfg.data.max_target_length})[0], skip_special_tokens=True)"
        )

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        # max_length, as Seq2SeqTrainer passes generation_max_length: the same outputs as evaluation's
        generated = run.model.generate(**batch, max_length=run.cfg.data.max_target_length)
        texts = run.processor.batch_decode(generated, skip_special_tokens=True)
        return [{"input": v, "text": t} for v, t in zip(inputs, texts)]
