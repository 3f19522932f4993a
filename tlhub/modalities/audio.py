"""Audio: classification with any ``AutoModelForAudioClassification`` model (wav2vec2,
HuBERT, WavLM, Whisper's encoder, ...) and speech recognition, by CTC fine-tuning
(``Wav2Vec2ForCTC`` and kin) or sequence to sequence (Whisper and other
``AutoModelForSpeechSeq2Seq`` models): the model's config says which, not the user.

No FFmpeg is needed: clips are decoded with `soundfile` (WAV, FLAC, OGG), mixed down to
mono and resampled to the feature extractor's rate with
``torchaudio.functional.resample``. ``torchaudio.load`` and the `datasets` Audio
decoder are never used, since both need FFmpeg through torchcodec; a Hub dataset's
Audio column is read undecoded (bytes or path) and decoded here.

Decoding and resampling happen lazily, in the ``set_transform`` function, so every
clip is resampled once per epoch at most and nothing large is held in memory.
``prepare`` checks every file's header up front: unreadable or empty clips are skipped
and counted, and the run fails only when more than ``data.max_bad_fraction`` is bad.

For speech recognition the character vocabulary comes from the training transcripts:
``prepare`` of ``data.train`` records the characters it saw (after
``data.chars_to_ignore`` and lowercasing), ``load_processor`` builds a
``Wav2Vec2CTCTokenizer`` + ``Wav2Vec2Processor`` from them, and ``load_model`` sizes
the CTC head to that tokenizer. An encoder-decoder keeps its own tokenizer
(``WhisperProcessor``): the transcripts become its label ids, the decoder learns them and
evaluation generates (``Seq2SeqTrainer``, ``predict_with_generate``). The pipeline saves
the processor with the model, so a finished run loads back with
``AutoProcessor.from_pretrained(run_dir)`` and in ``transformers.pipeline``.

Whisper reads a fixed window (30 s) of which a spoken word fills a few percent; its
window is cut (``tlhub.modalities.whisper_window``) to ``data.max_duration_s`` or, when
that is unset, to the longest training clip rounded up to whole seconds.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2Processor,
)

from tlhub.errors import ConfigError, DataError, ModelError
from tlhub.labels import label_tensor
from tlhub.loading import is_encoder_decoder, label_head, load_auto_model, load_config, model_error
from tlhub.modalities.base import MODALITIES, Modality
from tlhub.modalities.media import UnreadableExample, cell_source, drop_unreadable
from tlhub.modalities.whisper_window import check_window, fit_encoder, fit_extractor, is_whisper_extractor, window_seconds
from tlhub.models import backbone_of, frame_lengths, has_conv_frames

if TYPE_CHECKING:
    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga")
PAD, UNK, WORD = "[PAD]", "[UNK]", "|"


# --------------------------------------------------------------------------- decoding


class AudioReadError(UnreadableExample):
    """A clip that soundfile cannot read (or that holds no samples)."""


def _unreadable(name: str, exc: Exception) -> str:
    """Why soundfile could not read a clip, in words a user can act on: libsndfile reports a file
    it cannot parse as "File does not exist or is not a regular file" although it exists."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    detail = "not a format soundfile reads" if "does not exist" in detail and Path(name).is_file() else detail[:120]
    formats = ", ".join(sorted(f for f in sf.available_formats() if f in ("WAV", "FLAC", "OGG", "MP3", "AIFF")))
    return f"{name}: unreadable audio ({detail}); readable formats: {formats}; convert it, e.g. to WAV"


def non_finite(array: np.ndarray, name: str) -> str | None:
    """Why a decoded clip cannot be trained on (NaN or infinite samples poison the loss and the
    weights without an error), or None when every sample is a finite number."""
    finite = np.isfinite(array)
    if finite.all():
        return None
    first = int(np.flatnonzero(~finite.reshape(-1))[0])
    return f"{name}: {int((~finite).sum())} NaN or infinite sample(s), the first at sample {first}"


def check_clip(value: Any, base_dir: Path | None = None) -> float:
    """The clip's duration in seconds; AudioReadError unless the cell is audio soundfile can
    read, with samples in it, all of them finite numbers (the clip is decoded whole: a float
    WAV may hold NaN, which would silently turn the loss and the model into NaN)."""
    if isinstance(value, dict) and value.get("array") is not None:
        array = np.asarray(value["array"], dtype=np.float32)
        problem = non_finite(array, str(value.get("path") or "<array>"))
        if problem:
            raise AudioReadError(problem)
        return len(array) / float(value["sampling_rate"])
    source, name = cell_source(value, base_dir, AudioReadError, "audio")
    try:
        array, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioReadError(_unreadable(name, exc)) from None
    if len(array) == 0:
        raise AudioReadError(f"{name}: the clip holds no samples")
    problem = non_finite(array, name)
    if problem:
        raise AudioReadError(problem)
    return len(array) / float(rate)


def load_clip(value: Any, sampling_rate: int) -> np.ndarray:
    """Decode one cell to a mono float32 array at `sampling_rate` (resampled when needed).

    Raises DataError naming the file when it cannot be read or holds NaN or infinite samples,
    so a clip that went bad after `prepare` stops the run with a clear message instead of a
    traceback or a NaN loss.
    """
    name = "<array>"
    if isinstance(value, dict) and value.get("array") is not None:  # already decoded
        array, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    else:
        try:
            source, name = cell_source(value, None, AudioReadError, "audio")
            array, rate = sf.read(source, dtype="float32", always_2d=True)
        except AudioReadError as exc:
            raise DataError(f"audio: {exc}") from None
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"audio: {_unreadable(name, exc)}") from None
        array = array.mean(axis=1)  # stereo (and more) mixed down to mono
    if array.ndim > 1:
        array = array.mean(axis=-1)
    problem = non_finite(array, name)
    if problem:
        raise DataError(f"audio: {problem}")
    if rate != sampling_rate:
        array = AF.resample(torch.from_numpy(np.ascontiguousarray(array)), rate, sampling_rate).numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def fit_length(array: np.ndarray, length: int | None, random_offset: bool) -> np.ndarray:
    """Crop a clip to `length` samples (a random window when `random_offset`, else the start)
    or pad it with silence at the end; None leaves it as is."""
    if length is None:
        return array
    if len(array) > length:
        start = int(torch.randint(0, len(array) - length + 1, ()).item()) if random_offset else 0
        return array[start : start + length]
    return np.pad(array, (0, length - len(array)))


def augment(array: np.ndarray, sampling_rate: int, shift: bool = True, p: float = 0.5) -> np.ndarray:
    """Training augmentation, each step with probability `p`: random gain (±6 dB), a time
    shift of up to 0.1 s (the gap filled with silence; `shift=False` for speech
    recognition, where it would cut letters off the transcript's clip) and white noise
    at 15-40 dB SNR. Torch's RNG, so the Trainer's seed makes it repeatable.

    Each step applies to about half of the clips (as audiomentations' p=0.5 does), so
    training also sees unaltered audio like the evaluation's.
    """
    wave = torch.from_numpy(array)
    if torch.rand(()) < p:
        wave = AF.gain(wave, float(torch.empty(()).uniform_(-6.0, 6.0)))
    max_shift = min(len(wave) // 10, sampling_rate // 10)
    if shift and max_shift > 0 and torch.rand(()) < p:
        offset = int(torch.randint(-max_shift, max_shift + 1, ()))
        wave = torch.roll(wave, offset)
        if offset > 0:
            wave[:offset] = 0.0
        elif offset < 0:
            wave[offset:] = 0.0
    if wave.abs().max() > 0 and torch.rand(()) < p:
        snr = torch.empty(1).uniform_(15.0, 40.0)
        wave = AF.add_noise(wave[None], torch.randn(1, len(wave)), snr)[0]
    return wave.numpy().astype(np.float32)


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


def feature_extractor_of(processor: Any) -> Any:
    return getattr(processor, "feature_extractor", processor)


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


def warn_heavy_spec_augment(model: nn.Module, seconds: float | None) -> None:
    """Warn when SpecAugment would mask much of a typical clip.

    wav2vec2-style configs mask at least ``mask_time_min_masks`` spans of
    ``mask_time_length`` frames (20 ms each) per clip in training, whatever its length:
    with the defaults (2 x 10) that is 40 % of a 1 s clip. Measured on FSDD digits, a
    CTC model trained so (2 x 5 of ~25 frames) decoded every clean clip as blank.
    """
    config = model.config
    prob, length, floor = (getattr(config, k, 0) or 0 for k in ("mask_time_prob", "mask_time_length", "mask_time_min_masks"))
    ratio = getattr(config, "inputs_to_logits_ratio", None)
    if seconds is None or not prob or not ratio or not getattr(config, "apply_spec_augment", True):
        return
    frames = seconds * 16000 / ratio  # the wav2vec2 family reads 16 kHz; ratio = samples per frame (320)
    masked = max(floor * length, prob * frames)
    if frames > 0 and masked / frames > 0.25:
        logger.warning(
            "SpecAugment masks at least %d of the ~%d frames of a median training clip (%.1f s): "
            "mask_time_min_masks=%d x mask_time_length=%d. A model trained so may read clean clips as silence; "
            "set model.config_overrides: {mask_time_min_masks: 0} (or a smaller mask_time_length)",
            round(masked),
            round(frames),
            seconds,
            floor,
            length,
        )


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


# --------------------------------------------------------------------------- collator


class AudioCollator:
    """Pads waveforms with the feature extractor (to the longest clip, or to
    ``data.max_duration_s``) and labels: class ids as a tensor, CTC or decoder token ids
    padded with -100 so the loss ignores them. A decoder's labels lose their leading
    start token: the model puts it back when it shifts the labels right."""

    def __init__(self, processor: Any, max_samples: int | None, ctc: bool, decoder_start: int | None = None) -> None:
        self.processor = processor
        self.feature_extractor = feature_extractor_of(processor)
        self.max_samples = max_samples
        self.ctc = ctc
        self.decoder_start = decoder_start

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs = [{k: v for k, v in f.items() if k != "labels"} for f in features]
        padding = {"padding": "max_length", "max_length": self.max_samples} if self.max_samples else {"padding": True}
        batch = dict(self.feature_extractor.pad(inputs, return_tensors="pt", **padding))
        if features and "labels" in features[0]:
            labels = [f["labels"] for f in features]
            if self.ctc or self.decoder_start is not None:
                padded = self.processor.tokenizer.pad({"input_ids": labels}, return_tensors="pt")
                ids = padded["input_ids"].masked_fill(padded["attention_mask"].ne(1), -100)
                if self.decoder_start is not None and ids.shape[1] > 1 and bool((ids[:, 0] == self.decoder_start).all()):
                    ids = ids[:, 1:]
                batch["labels"] = ids
            else:
                batch["labels"] = label_tensor(labels)  # class ids, numbers or multi-hot rows
        return batch


# --------------------------------------------------------------------------- the modality


@MODALITIES.register("audio")
class AudioModality(Modality):
    name = "audio"
    tasks = ("classification", "speech_recognition")

    def __init__(self) -> None:
        self.transcript_chars: set[str] | None = None  # set by prepare() of data.train (CTC)
        self.tokenizer_size: int | None = None  # set by load_processor() (CTC)
        self.pad_token_id: int | None = None
        self.median_seconds: float | None = None  # set by prepare() of data.train
        self.longest_seconds: float | None = None  # set by prepare() of data.train: Whisper's default window
        self.seq2seq = False  # set by load_processor(): speech recognition by an encoder-decoder

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        data = cfg.data
        columns = {"data.audio_column": data.audio_column}
        if cfg.task == "speech_recognition":
            columns["data.target_column"] = data.target_column
        else:
            columns["data.label_column"] = data.label_column
        return columns

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        """``<label>/<clip>.wav|flac|ogg`` -> rows of (absolute path, label)."""
        if cfg.task != "classification":
            raise DataError(
                f"{key}: {path} is a folder; speech recognition reads a manifest (.csv .json .jsonl) with the columns "
                f"'{cfg.data.audio_column}' (path) and '{cfg.data.target_column}' (transcript)"
            )
        rows = [
            {cfg.data.audio_column: str(f), cfg.data.label_column: sub.name}
            for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            for f in sorted(sub.iterdir())
            if f.suffix.lower() in AUDIO_EXTENSIONS
        ]
        if not rows:
            raise DataError(
                f"{key}: {path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in label subfolders; "
                "expected <label>/<clip>.wav, or pass a manifest file"
            )
        return datasets.Dataset.from_list(rows)

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        """Resolve paths, skip (and count) unreadable clips, normalise transcripts.

        Fails when more than ``data.max_bad_fraction`` of the rows is unreadable, naming
        the first bad files.
        """
        data = cfg.data
        column = data.audio_column
        if isinstance(ds.features[column], datasets.Audio):  # Hub dataset: read undecoded, decode with soundfile
            ds = ds.cast_column(column, datasets.Audio(decode=False))
        ds, bad, seconds = drop_unreadable(
            ds, column, lambda value: check_clip(value, base_dir), origin, base_dir, data.max_bad_fraction, "audio clips"
        )
        if cfg.task == "speech_recognition":
            ds = self._prepare_transcripts(ds, cfg, origin)
        if origin.startswith("data.train") and seconds:
            self.median_seconds = float(np.median(seconds))
            self.longest_seconds = float(np.max(seconds))
        return ds, bad

    def _prepare_transcripts(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> datasets.Dataset:
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

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        """The feature extractor (classification) or a Wav2Vec2Processor (CTC).

        For CTC training (no `source`) the tokenizer is built from the characters of the
        training transcripts that `prepare` recorded; a finished run (`source`) loads
        the processor saved with it.
        """
        name = source or cfg.model.name_or_path
        common = {"revision": None if source else cfg.model.revision, "trust_remote_code": cfg.model.trust_remote_code}
        window = window_seconds(cfg.data.max_duration_s or self.longest_seconds)  # Whisper: a short window
        try:
            if cfg.task != "speech_recognition":
                extractor = AutoFeatureExtractor.from_pretrained(name, **common)
                if source is None:
                    check_window(extractor, cfg.data.max_duration_s)
                return fit_extractor(extractor, window)
            self.seq2seq = is_encoder_decoder(cfg.model, source)
            if self.seq2seq:  # Whisper and kin: the model's own tokenizer and feature extractor
                check_task_head(MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING, cfg, "sequence-to-sequence speech recognition", source)
                processor = AutoProcessor.from_pretrained(name, **common)
                if not hasattr(processor, "tokenizer"):
                    raise ModelError(f"model.name_or_path: '{name}' is an encoder-decoder without a tokenizer to decode with")
                if source is None:
                    check_window(processor.feature_extractor, cfg.data.max_duration_s)
                fit_extractor(processor.feature_extractor, window)
                if processor.tokenizer.pad_token is None:  # Whisper's pads labels with its end-of-text token
                    processor.tokenizer.pad_token = processor.tokenizer.eos_token
            elif source is not None or self.transcript_chars is None:
                processor = AutoProcessor.from_pretrained(name, **common)
                if not hasattr(processor, "tokenizer"):
                    raise ModelError(
                        f"model.name_or_path: '{name}' has no CTC tokenizer; speech recognition builds one from "
                        "the training transcripts (data.train)"
                    )
            else:
                feature_extractor = AutoFeatureExtractor.from_pretrained(name, **common)
                with tempfile.TemporaryDirectory(prefix="tlhub-vocab-") as tmp:  # read at once; saved with the run
                    tokenizer = build_ctc_tokenizer(self.transcript_chars, Path(tmp))
                processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        except (OSError, ValueError, KeyError) as exc:
            raise model_error(cfg.model, exc) from None
        self.tokenizer_size, self.pad_token_id = len(processor.tokenizer), processor.tokenizer.pad_token_id
        return processor

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        if cfg.task == "speech_recognition" and self.seq2seq:
            model = load_auto_model(AutoModelForSpeechSeq2Seq, cfg.model)
            model.generation_config.forced_decoder_ids = None  # generate() sets the prompt (language, task) itself
            return fit_encoder(model, window_seconds(cfg.data.max_duration_s or self.longest_seconds))
        if cfg.task == "speech_recognition":
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
            warn_heavy_spec_augment(model, self.clip_seconds(cfg))
            return model
        assert label_names is not None
        model = load_auto_model(
            AutoModelForAudioClassification,
            cfg.model,
            **label_head(label_names, cfg.data.problem_type),
        )
        warn_heavy_spec_augment(model, self.clip_seconds(cfg))
        return fit_encoder(model, window_seconds(cfg.data.max_duration_s or self.longest_seconds))  # Whisper: a short window

    def clip_seconds(self, cfg: RunConfig) -> float | None:
        """How long a typical training clip is as the model sees it (the median, cut to max_duration_s)."""
        if self.median_seconds is None:
            return None
        return min(self.median_seconds, cfg.data.max_duration_s or self.median_seconds)

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        data = cfg.data
        extractor = feature_extractor_of(processor)
        rate = int(extractor.sampling_rate)
        max_samples = int(round(data.max_duration_s * rate)) if data.max_duration_s else None
        augmenting = train and data.augment
        ctc = cfg.task == "speech_recognition"  # (CTC or seq2seq: transcripts, not labels; no time shift)
        # Whisper pads every clip to its window: the mask tells feature extraction which frames are audio
        mask = {"return_attention_mask": True} if is_whisper_extractor(extractor) and cfg.task == "classification" else {}

        def apply(batch: dict[str, list]) -> dict[str, list]:
            arrays = []
            for value in batch[data.audio_column]:
                array = load_clip(value, rate)
                if max_samples is not None and len(array) > max_samples:
                    array = fit_length(array, max_samples, random_offset=augmenting and not ctc)
                if augmenting:
                    array = augment(array, rate, shift=not ctc)
                arrays.append(array)
            out = dict(extractor(arrays, sampling_rate=rate, **mask))
            if ctc and data.target_column in batch:
                out["labels"] = processor.tokenizer(batch[data.target_column])["input_ids"]
            elif "labels" in batch:
                out["labels"] = batch["labels"]
            return out

        return apply

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        rate = int(feature_extractor_of(processor).sampling_rate)
        max_samples = int(round(cfg.data.max_duration_s * rate)) if cfg.data.max_duration_s else None
        if is_whisper_extractor(feature_extractor_of(processor)):
            max_samples = None  # fixed-size log-mel features, already padded to the window
        asr = cfg.task == "speech_recognition"
        start = getattr(getattr(model, "config", None), "decoder_start_token_id", None) if asr and self.seq2seq else None
        return AudioCollator(processor, max_samples, ctc=asr and not self.seq2seq, decoder_start=start)

    def blocks(self, model: nn.Module) -> list[nn.ModuleList] | None:
        """The transformer layers (``encoder.layers``, and an encoder-decoder's
        ``decoder.layers``), not the convolutional feature encoder."""
        backbone = backbone_of(model)
        stacks = [getattr(getattr(backbone, part, None), "layers", None) for part in ("encoder", "decoder")]
        stacks = [layers for layers in stacks if isinstance(layers, nn.ModuleList) and len(layers) > 0]
        return stacks or None

    def peft_task_type(self, task: str) -> str | None:
        return None  # a plain PeftModel; the head is kept trainable through modules_to_save

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        try:
            check_clip(value)
        except AudioReadError as exc:
            raise DataError(f"predict: {exc}") from None
        return {cfg.data.audio_column: str(Path(value).expanduser().resolve())}
