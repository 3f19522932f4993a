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

Speech recognition brings its own side of the modality (``Task.audio``:
:class:`tlhub.tasks.speech_recognition.SpeechAudio`), to which the modality delegates its
transcripts, its CTC vocabulary (built from the training transcripts) or an encoder-decoder's
tokenizer, its model class and its labels, as the text modality delegates to a task's
TextSide. The pipeline saves the processor with the model, so a finished run loads back with
``AutoProcessor.from_pretrained(run_dir)`` and in ``transformers.pipeline``.

Whisper reads a fixed window (30 s) of which a spoken word fills a few percent; its
window is cut (``tlhub.modalities.whisper_window``) to ``data.max_duration_s`` or, when
that is unset, to the longest training clip rounded up to whole seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import nn
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from tlhub.errors import DataError
from tlhub.labels import label_tensor
from tlhub.loading import label_head, load_auto_model, model_error
from tlhub.modalities.base import MODALITIES, Modality
from tlhub.modalities.media import UnreadableExample, cell_source, drop_unreadable, label_folder_rows
from tlhub.modalities.whisper_window import check_window, fit_encoder, fit_extractor, is_whisper_extractor, window_seconds
from tlhub.models import backbone_of
from tlhub.tasks import get_task
from tlhub.tasks.base import AudioSide

if TYPE_CHECKING:
    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)

# The clips a label folder may hold: those soundfile reads that datasets' audiofolder lists too
# (it does not list .oga, Ogg audio's other name: rename such clips .ogg, or use a manifest)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


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


# --------------------------------------------------------------------------- the model


def feature_extractor_of(processor: Any) -> Any:
    return getattr(processor, "feature_extractor", processor)


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


# --------------------------------------------------------------------------- collator


class AudioCollator:
    """Pads waveforms with the feature extractor (to the longest clip, or to
    ``data.max_duration_s``) and labels: class ids as a tensor, or as the task's side batches
    them (`pad_labels`: a transcript's token ids, tlhub.tasks.speech_recognition)."""

    def __init__(self, processor: Any, max_samples: int | None, pad_labels: Callable[[list], torch.Tensor] | None = None) -> None:
        self.feature_extractor = feature_extractor_of(processor)
        self.max_samples = max_samples
        self.pad_labels = pad_labels

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs = [{k: v for k, v in f.items() if k != "labels"} for f in features]
        padding = {"padding": "max_length", "max_length": self.max_samples} if self.max_samples else {"padding": True}
        batch = dict(self.feature_extractor.pad(inputs, return_tensors="pt", **padding))
        if features and "labels" in features[0]:
            labels = [f["labels"] for f in features]
            batch["labels"] = self.pad_labels(labels) if self.pad_labels is not None else label_tensor(labels)  # class ids, numbers or multi-hot rows
        return batch


# --------------------------------------------------------------------------- the modality


@MODALITIES.register("audio")
class AudioModality(Modality):
    name = "audio"
    tasks = ("classification", "speech_recognition")

    def __init__(self) -> None:
        self.median_seconds: float | None = None  # set by prepare() of data.train
        self.longest_seconds: float | None = None  # set by prepare() of data.train: Whisper's default window
        self.task_side: AudioSide | None = None  # the task's own side (speech recognition), made on first use

    def side(self, cfg: RunConfig) -> AudioSide | None:
        """The task's own side of the audio modality, where it brings one: one per modality,
        so that what it learns from the training rows (a CTC vocabulary) serves the model."""
        kind = get_task(cfg.task).audio
        if kind is None:
            return None
        if not isinstance(self.task_side, kind):
            self.task_side = kind()
        return self.task_side

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        if side := self.side(cfg):
            return side.required_columns(cfg)
        return {"data.audio_column": cfg.data.audio_column, "data.label_column": cfg.data.label_column}

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        """``<label>/<clip>.wav|flac|ogg`` -> rows of (absolute path, label), sorted, listed by
        `datasets`' audiofolder (:func:`tlhub.modalities.media.label_folder_rows`) without
        decoding anything."""
        if side := self.side(cfg):
            return side.load_folder(path, cfg, key)
        rows = label_folder_rows("audio", path, cfg.data.audio_column, cfg.data.label_column, AUDIO_EXTENSIONS)
        if rows is None:
            raise DataError(
                f"{key}: {path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in label subfolders; "
                "expected <label>/<clip>.wav, or pass a manifest file"
            )
        return rows

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        """Resolve paths, skip (and count) unreadable clips; then the task's side reads the
        rows (speech recognition normalises the transcripts).

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
        if side := self.side(cfg):
            ds = side.prepare(ds, cfg, origin)
        if origin.startswith("data.train") and seconds:
            self.median_seconds = float(np.median(seconds))
            self.longest_seconds = float(np.max(seconds))
        return ds, bad

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        """The feature extractor (classification), or the task side's processor (speech
        recognition: a Wav2Vec2Processor for CTC, an encoder-decoder's own), with Whisper's
        window cut to the clips; a finished run (`source`) loads the processor saved with it."""
        name = source or cfg.model.name_or_path
        common = {"revision": None if source else cfg.model.revision, "trust_remote_code": cfg.model.trust_remote_code}
        window = window_seconds(cfg.data.max_duration_s or self.longest_seconds)  # Whisper: a short window
        try:
            side = self.side(cfg)
            processor = side.load_processor(cfg, name, common, source) if side else AutoFeatureExtractor.from_pretrained(name, **common)
        except (OSError, ValueError, KeyError) as exc:
            raise model_error(cfg.model, exc) from None
        if source is None:
            check_window(feature_extractor_of(processor), cfg.data.max_duration_s)
        fit_extractor(feature_extractor_of(processor), window)  # (no-op but for Whisper's)
        return processor

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        if side := self.side(cfg):
            model = side.load_model(cfg)
        else:
            assert label_names is not None
            model = load_auto_model(AutoModelForAudioClassification, cfg.model, **label_head(label_names, cfg.data.problem_type))
        warn_heavy_spec_augment(model, self.clip_seconds(cfg))  # (no-op for Whisper, which has no SpecAugment on)
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
        side = self.side(cfg)
        shift = side.time_shift if side else True  # (a transcript must stay in its clip)
        # Whisper pads every clip to its window: the mask tells feature extraction which frames are audio
        mask = {"return_attention_mask": True} if is_whisper_extractor(extractor) and side is None else {}

        def apply(batch: dict[str, list]) -> dict[str, list]:
            arrays = []
            for value in batch[data.audio_column]:
                array = load_clip(value, rate)
                if max_samples is not None and len(array) > max_samples:
                    array = fit_length(array, max_samples, random_offset=augmenting and shift)
                if augmenting:
                    array = augment(array, rate, shift=shift)
                arrays.append(array)
            out = dict(extractor(arrays, sampling_rate=rate, **mask))
            labels = side.labels(batch, processor, cfg) if side else None
            if labels is not None:
                out["labels"] = labels
            elif "labels" in batch:
                out["labels"] = batch["labels"]
            return out

        return apply

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        rate = int(feature_extractor_of(processor).sampling_rate)
        max_samples = int(round(cfg.data.max_duration_s * rate)) if cfg.data.max_duration_s else None
        if is_whisper_extractor(feature_extractor_of(processor)):
            max_samples = None  # fixed-size log-mel features, already padded to the window
        side = self.side(cfg)
        return AudioCollator(processor, max_samples, side.label_padder(processor, model) if side else None)

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
