"""Speech recognition: a transcript per clip, by CTC (wav2vec2 and kin: greedy decoding of
per-frame characters) or by an encoder-decoder that generates it (Whisper). Scored by WER and
CER, on normalised text by default (``data.normalize_text``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tlhub.loading import is_encoder_decoder
from tlhub.metrics import normalize_text
from tlhub.tasks.base import TASKS, Task, combined
from tlhub.tasks.text2text import decode_generated

if TYPE_CHECKING:
    import torch

    from tlhub.config import RunConfig


@TASKS.register("speech_recognition")
class SpeechRecognition(Task):
    name = "speech_recognition"
    generation_settings = True  # generates: Seq2SeqTrainingArguments' generation keys apply
    metrics = ("wer", "cer")
    main_metric = ("wer", False)
    pipeline_tags = {"audio": "automatic-speech-recognition"}

    def generates(self, cfg: RunConfig, source: str | None = None) -> bool:
        """An encoder-decoder (Whisper) generates; a CTC model reads its per-frame logits. The
        model's config (or the one saved in `source`) says which."""
        return is_encoder_decoder(cfg.model, source)

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        metrics = combined(self.metrics)

        def compute(pred: Any) -> dict[str, float]:
            predictions, references = decode_generated(processor, pred, ctc=not generative)
            if cfg.data.normalize_text:
                predictions, references = normalize_text(predictions), normalize_text(references)
            return metrics.compute(predictions=predictions, references=references)

        return compute

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        if run.generative:
            generated = run.model.generate(**batch, max_length=run.cfg.data.max_target_length)
            texts = run.processor.batch_decode(generated, skip_special_tokens=True)
        else:
            texts = run.processor.batch_decode(run.model(**batch).logits.argmax(-1))
        return [{"input": v, "text": t} for v, t in zip(inputs, texts)]
