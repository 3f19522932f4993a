"""Speech recognition: a transcript per clip, by CTC (wav2vec2 and kin: greedy decoding of
per-frame characters) or by an encoder-decoder that generates it (Whisper). Scored by WER and
CER, on normalised text by default (``data.normalize_text``).

Its side of the audio modality (:class:`SpeechAudio`): the transcripts are normalised
(``data.chars_to_ignore``, lowercasing) and, for CTC, the character vocabulary comes from the
training transcripts: ``prepare`` of ``data.train`` records the characters it saw,
``load_processor`` builds a ``Wav2Vec2CTCTokenizer`` + ``Wav2Vec2Processor`` from them, and
``load_model`` sizes the CTC head to that tokenizer. An encoder-decoder keeps its own tokenizer
(``WhisperProcessor``): the transcripts become its label ids, the decoder learns them and
evaluation generates (``Seq2SeqTrainer``, ``predict_with_generate``). The model's config says
which, not the user.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
from torch import nn
from transformers import (
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2Processor,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING

from tlhub.errors import ConfigError, DataError, ModelError
from tlhub.loading import is_encoder_decoder, load_auto_model, load_config
from tlhub.metrics import normalize_text
from tlhub.models import frame_lengths, has_conv_frames
from tlhub.tasks.base import TASKS, AudioSide, Task, combined
from tlhub.tasks.text2text import decode_generated

if TYPE_CHECKING:
    from tlhub.config import RunConfig

PAD, UNK, WORD = "[PAD]", "[UNK]", "|"


# --------------------------------------------------------------------------- transcripts


def normalise_transcript(text: str, chars_to_ignore: str, lowercase: bool) -> str:
    """The transcript as the CTC model learns it: ignored characters removed, lowercased
    (when asked) and whitespace collapsed to single spaces."""
    if chars_to_ignore:
        text = re.sub(f"[{re.escape(chars_to_ignore)}]", "", text)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


def build_ctc_tokenizer(characters: set[str], directory: Path) -> Wav2Vec2CTCTokenizer:
    """A character-level CTC tokenizer: [PAD] (the CTC blank, id 0), [UNK], the word
    delimiter | (for spaces) and the sorted characters of the training transcripts.

    The blank is id 0 on purpose: the Trainer pads logits of different lengths with
    -100, whose argmax is 0, so padded frames decode as blanks.
    """
    chars = sorted(c for c in characters if not c.isspace())
    vocab = {PAD: 0, UNK: 1, WORD: 2, **{c: i + 3 for i, c in enumerate(chars)}}
    path = directory / "vocab.json"
    path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return Wav2Vec2CTCTokenizer(
        str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD, bos_token=None, eos_token=None
    )


def blank_padded_frames(model: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Forward hook of CTC models: frames that only cover batch padding decode as blank.

    The CTC loss already ignores them (it reads the lengths from the attention mask),
    but their logits are untrained, and greedy decoding of a padded batch (the
    Trainer's evaluation, `tlhub predict` of several files) would read letters there.
    Needs the attention mask; feature extractors without one (wav2vec2-base's) pad
    with silence, which the model learns to read as blank.
    """
    mask = kwargs.get("attention_mask")
    logits = getattr(output, "logits", None)
    if mask is None or logits is None or not has_conv_frames(model.config):
        return output
    lengths = frame_lengths(model.config, mask.sum(-1)).to(logits.device)
    padded = torch.arange(logits.shape[1], device=logits.device)[None, :] >= lengths[:, None]
    if not padded.any():
        return output
    blank = torch.full_like(logits, -1e4)
    blank[..., model.config.pad_token_id] = 0.0
    output.logits = torch.where(padded[..., None], blank, logits)
    return output


def check_task_head(mapping: Any, cfg: RunConfig, what: str, source: str | None = None) -> None:
    """A config error naming the model when its architecture has no head for `what`
    (T5 for speech, or BERT for CTC): `mapping` is the auto class's config -> model table."""
    try:
        config = load_config(cfg.model, source)
    except (OSError, ValueError, KeyError):
        return  # loading the model says why
    if type(config) not in mapping:
        raise ConfigError(
            f"model.name_or_path: {type(config).__name__.removesuffix('Config')} ({cfg.model.name_or_path}) has no head for "
            f"{what}; task: speech_recognition takes a CTC model (wav2vec2, HuBERT, WavLM) or a speech encoder-decoder "
            "(Whisper), and the model's config decides which"
        )


class TranscriptLabels:
    """Batches transcripts' token ids (CTC or decoder), padded with -100 so the loss ignores
    them. A decoder's labels lose their leading start token: the model puts it back when it
    shifts the labels right."""

    def __init__(self, tokenizer: Any, decoder_start: int | None) -> None:
        self.tokenizer = tokenizer
        self.decoder_start = decoder_start

    def __call__(self, labels: list[list[int]]) -> torch.Tensor:
        padded = self.tokenizer.pad({"input_ids": labels}, return_tensors="pt")
        ids = padded["input_ids"].masked_fill(padded["attention_mask"].ne(1), -100)
        if self.decoder_start is not None and ids.shape[1] > 1 and bool((ids[:, 0] == self.decoder_start).all()):
            ids = ids[:, 1:]
        return ids


# --------------------------------------------------------------------------- its side of the audio modality


class SpeechAudio(AudioSide):
    """Speech recognition's side of the audio modality: manifests of (clip, transcript), the
    transcripts normalised, a CTC vocabulary built from the training ones, or an
    encoder-decoder's own tokenizer."""

    time_shift = False  # (CTC or seq2seq: transcripts, not labels; no time shift)

    def __init__(self) -> None:
        self.transcript_chars: set[str] | None = None  # set by prepare() of data.train (CTC)
        self.tokenizer_size: int | None = None  # set by load_processor() (CTC)
        self.pad_token_id: int | None = None
        self.seq2seq = False  # set by load_processor(): speech recognition by an encoder-decoder

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        return {"data.audio_column": cfg.data.audio_column, "data.target_column": cfg.data.target_column}

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        raise DataError(
            f"{key}: {path} is a folder; speech recognition reads a manifest (.csv .json .jsonl) with the columns "
            f"'{cfg.data.audio_column}' (path) and '{cfg.data.target_column}' (transcript)"
        )

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> datasets.Dataset:
        """Normalise the transcripts (an empty one is an error naming its row); those of
        ``data.train`` give the CTC vocabulary."""
        data = cfg.data
        texts = []
        for row, value in enumerate(ds[data.target_column], 1):
            text = normalise_transcript(value, data.chars_to_ignore, data.lowercase_transcripts) if isinstance(value, str) else ""
            if not text:
                raise DataError(
                    f"{origin}: row {row}: empty transcript in column '{data.target_column}' "
                    "(after removing data.chars_to_ignore); fill it in or drop the row"
                )
            texts.append(text)
        if origin.startswith("data.train"):
            self.transcript_chars = set("".join(texts))
        return ds.remove_columns(data.target_column).add_column(data.target_column, texts)

    def load_processor(self, cfg: RunConfig, name: str, pretrained: dict[str, Any], source: str | None) -> Any:
        """An encoder-decoder's own processor, or a Wav2Vec2Processor (CTC). For CTC training
        (no `source`) the tokenizer is built from the characters of the training transcripts
        that `prepare` recorded; a finished run (`source`) loads the processor saved with it."""
        self.seq2seq = is_encoder_decoder(cfg.model, source)
        if self.seq2seq:  # Whisper and kin: the model's own tokenizer and feature extractor
            check_task_head(MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING, cfg, "sequence-to-sequence speech recognition", source)
            processor = AutoProcessor.from_pretrained(name, **pretrained)
            if not hasattr(processor, "tokenizer"):
                raise ModelError(f"model.name_or_path: '{name}' is an encoder-decoder without a tokenizer to decode with")
            if processor.tokenizer.pad_token is None:  # Whisper's pads labels with its end-of-text token
                processor.tokenizer.pad_token = processor.tokenizer.eos_token
        elif source is not None or self.transcript_chars is None:
            processor = AutoProcessor.from_pretrained(name, **pretrained)
            if not hasattr(processor, "tokenizer"):
                raise ModelError(
                    f"model.name_or_path: '{name}' has no CTC tokenizer; speech recognition builds one from "
                    "the training transcripts (data.train)"
                )
        else:
            feature_extractor = AutoFeatureExtractor.from_pretrained(name, **pretrained)
            with tempfile.TemporaryDirectory(prefix="tlhub-vocab-") as tmp:  # read at once; saved with the run
                tokenizer = build_ctc_tokenizer(self.transcript_chars, Path(tmp))
            processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        self.tokenizer_size, self.pad_token_id = len(processor.tokenizer), processor.tokenizer.pad_token_id
        return processor

    def load_model(self, cfg: RunConfig) -> nn.Module:
        if self.seq2seq:
            model = load_auto_model(AutoModelForSpeechSeq2Seq, cfg.model)
            model.generation_config.forced_decoder_ids = None  # generate() sets the prompt (language, task) itself
            return model
        check_task_head(MODEL_FOR_CTC_MAPPING, cfg, "CTC speech recognition")
        if self.tokenizer_size is None:
            raise ModelError("speech recognition: load the processor (load_processor) before the model, to size the CTC head")
        model = load_auto_model(
            AutoModelForCTC,
            cfg.model,
            vocab_size=self.tokenizer_size,
            pad_token_id=self.pad_token_id,
            ctc_loss_reduction="mean",
            ctc_zero_infinity=True,  # a clip too short for its transcript gives no inf loss
        )
        model.register_forward_hook(blank_padded_frames, with_kwargs=True)
        return model

    def labels(self, batch: dict[str, list], processor: Any, cfg: RunConfig) -> list | None:
        if cfg.data.target_column not in batch:
            return None
        return processor.tokenizer(batch[cfg.data.target_column])["input_ids"]

    def label_padder(self, processor: Any, model: nn.Module) -> Callable[[list], torch.Tensor] | None:
        start = getattr(getattr(model, "config", None), "decoder_start_token_id", None) if self.seq2seq else None
        return TranscriptLabels(processor.tokenizer, start) if not self.seq2seq or start is not None else None


@TASKS.register("speech_recognition")
class SpeechRecognition(Task):
    name = "speech_recognition"
    generation_settings = True  # generates: Seq2SeqTrainingArguments' generation keys apply
    metrics = ("wer", "cer")
    main_metric = ("wer", False)
    pipeline_tags = {"audio": "automatic-speech-recognition"}
    audio = SpeechAudio

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
