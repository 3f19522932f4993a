"""The feature cache: feature extraction runs the frozen backbone once per example.

A strategy that trains a head on a frozen backbone (feature extraction with
``strategy.cache: true``, the default, for classification) asks for it: the backbone of the
:class:`~tlhub.models.PooledClassifier` is frozen and in eval mode, so its pooled output for an example never changes during
training. :func:`cached_splits` computes those vectors once per split, stores them on
disk, and gives the Trainer datasets of ``features`` + ``labels``; the head then trains
for as many epochs as asked without running the backbone again (Ludwig reports 50x
from the same idea). The saved run is still the whole PooledClassifier (backbone +
head), so ``tlhub predict`` and ``tlhub evaluate`` read raw inputs as usual.

The cache works for every modality through the :class:`~tlhub.modalities.Modality`
interface (its evaluation transform and collator) and ``PooledClassifier.features``.
Features are computed with the evaluation transform (``train=False``): training
augmentation of images or audio is not applied to cached features; set
``strategy.cache: false`` to keep augmentation. Features are computed in batches of
``per_device_eval_batch_size`` of similar lengths; for text (masked mean) they do not
depend on the batch, while models whose normalisation sees padding (wav2vec2 with
group norm) give each clip the features of the batch it was computed in.

Each split lives under ``$TLHUB_CACHE`` (default ``~/.cache/tlhub/features``) in a
folder named by a key that hashes everything the features depend on:

- the model: its name or path, revision (and the Hub snapshot's commit when cached
  locally), and for a local folder the name, size and modification time of its config
  and weight files; for random weights (``model.pretrained: false``) the seed;
- the preprocessing: the processor's saved files (tokenizer vocabulary, image processor
  or feature extractor settings), the data settings that feed the transform
  (``max_length``, columns, ...), the modality, task and pooling (and whether every
  layer is pooled, for ``strategy.weighted_layer_sum``: the head then learns the mix);
- the data: the split's name and the ``datasets`` fingerprint of the raw split, which
  changes with its contents, sampling and label encoding, and for image and audio files
  named by path the size and modification time of each file (an edit in place keeps the
  path, so the fingerprint alone would miss it);
- the libraries: the versions of torch, transformers and tlhub; for audio, the eval
  batch size (see above: it changes wav2vec2's features).

Any change of these recomputes; anything else (learning rate, epochs, output_dir, the
head's dropout) reuses the cache. Folders are written atomically (a temporary folder
renamed into place), so a killed run never leaves a half-written entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
from safetensors.torch import load_file, save_file

from tlhub.compat import dataset_fingerprint
from tlhub.errors import WriteError
from tlhub.io import atomic_save_dir
from tlhub.models import PooledClassifier
from tlhub.progress import bar

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from tlhub.config import RunConfig
    from tlhub.modalities import Modality

CACHE_ENV = "TLHUB_CACHE"
FORMAT_VERSION = 2
FEATURES_FILE = "features.safetensors"
KEY_FILE = "key.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")

# Data settings whose effect is already in the split's fingerprint (which rows, which
# labels) or that do not reach the transform; every other `data` key is part of the key.
SPLIT_KEYS = frozenset(
    {
        "train",
        "validation",
        "test",
        "dataset_config",
        "train_split",
        "eval_split",
        "test_split",
        "validation_split",
        "train_fraction",
        "max_train_samples",
        "max_eval_samples",
        "samples_per_class",
        "max_bad_fraction",
        "seed",
        # read after the forward pass: how windows combine, and the multi-label decision threshold
        "chunk_aggregation",
        "threshold",
        "tune_threshold",
    }
)


def cache_root() -> Path:
    """Where cached features live: ``$TLHUB_CACHE`` or ``~/.cache/tlhub/features``."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "tlhub" / "features"


# --------------------------------------------------------------------------- the key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_identity(cfg: RunConfig) -> dict[str, Any]:
    """What identifies the backbone's weights, cheaply (no hashing of the weights).

    A local folder: the content of its config.json and the name, size and modification
    time (ns) of each weight file. A Hub id: name, revision, and the commit of the
    locally cached snapshot when there is one. Always: ``model.config_overrides`` and
    ``model.dtype``. Random weights: also the seed.
    """
    model = cfg.model
    identity: dict[str, Any] = {
        "name_or_path": model.name_or_path,
        "revision": model.revision,
        "pretrained": model.pretrained,
        "config_overrides": model.config_overrides,
        "dtype": model.dtype,
    }
    path = Path(model.name_or_path).expanduser()
    if path.is_dir():
        identity["name_or_path"] = str(path.resolve())
        files = {}
        for file in sorted(path.rglob("*")):
            if file.is_file() and (file.suffix in WEIGHT_SUFFIXES or file.name == "config.json"):
                stat = file.stat()
                files[str(file.relative_to(path))] = [stat.st_size, stat.st_mtime_ns]
        identity["files"] = files
        config = path / "config.json"
        if config.is_file():
            identity["config_sha256"] = _sha256(config.read_bytes())
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model.name_or_path, "config.json", revision=model.revision)
            if isinstance(found, str):
                identity["snapshot"] = Path(found).parent.name  # snapshots/<commit>/config.json
        except Exception:  # noqa: BLE001 - an unusual id: name and revision identify it
            pass
    if not model.pretrained or cfg.modality == "timeseries":  # series: a new, seeded patch embedding before the body
        identity["seed"] = cfg.seed
        identity["torch"] = torch.__version__
    return identity


def processor_identity(processor: Any) -> str:
    """A hash of the files ``processor.save_pretrained`` writes (vocabulary, settings).

    A fast tokenizer's ``tokenizer.json`` also records the truncation and padding of
    its last call (runtime state, not a setting); those two entries are left out.
    """
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="tlhub-processor-") as tmp:
        processor.save_pretrained(tmp)
        for file in sorted(Path(tmp).rglob("*")):
            if not file.is_file():
                continue
            content = file.read_bytes()
            if file.name == "tokenizer.json":
                try:
                    state = json.loads(content)
                    state.pop("truncation", None)
                    state.pop("padding", None)
                    content = json.dumps(state, sort_keys=True).encode()
                except ValueError:
                    pass
            digest.update(str(file.relative_to(tmp)).encode())
            digest.update(content)
    return digest.hexdigest()


def preprocessing_settings(cfg: RunConfig) -> dict[str, Any]:
    """The settings of the transform: the `data` keys that are not about which rows."""
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in SPLIT_KEYS}
    return {"modality": cfg.modality, "task": cfg.task, "data": data}


def feature_key(parts: dict[str, Any]) -> str:
    """The folder name of a cache entry: a hash of its key parts."""
    return _sha256(json.dumps(parts, sort_keys=True, default=str).encode())[:32]


def library_versions() -> dict[str, str]:
    """The versions of the libraries that compute features (a new release may change them)."""
    import transformers

    from tlhub.version import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tlhub": __version__}


def media_identity(ds: datasets.Dataset, column: str | None) -> str | None:
    """A hash of the name, size and modification time of every media file a split reads.

    The split's fingerprint covers the *paths* of image and audio files, not their
    contents: a file edited in place keeps its path. Cells holding the bytes themselves
    are in the fingerprint already; only cells that name a file are stat'ed here.
    """
    if column is None or column not in ds.column_names:
        return None
    digest = hashlib.sha256()
    for cell in ds.with_format("arrow")[column].to_pylist():  # the stored cells, not decoded
        if isinstance(cell, dict):
            path = None if cell.get("bytes") else cell.get("path")
        else:
            path = cell if isinstance(cell, str) else None
        if not path:
            continue
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def key_parts(
    cfg: RunConfig,
    processor_hash: str,
    pooling: str,
    split: str,
    fingerprint: str,
    dtype: str = "float32",
    media: str | None = None,
    eval_batch_size: int | None = None,
) -> dict[str, Any]:
    """Everything the cached features of one split depend on (see the module docstring)."""
    return {
        "format": FORMAT_VERSION,
        "versions": library_versions(),
        "media": media,
        # wav2vec2-style group norm sees the padding of the batch a clip is computed in
        "eval_batch_size": eval_batch_size if cfg.modality == "audio" else None,
        "model": model_identity(cfg),
        "processor": processor_hash,
        "preprocessing": preprocessing_settings(cfg),
        "pooling": pooling,
        "dtype": dtype,
        "split": split,
        "fingerprint": fingerprint,
    }


# --------------------------------------------------------------------------- computing


@torch.no_grad()
def extract_features(
    model: PooledClassifier,
    ds: datasets.Dataset,
    transform: Callable[[dict[str, list]], dict[str, list]],
    collator: Callable[[list[dict]], dict],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    desc: str = "features",
    progress: bool = True,
    sort_window: int = 16,
) -> dict[str, torch.Tensor]:
    """Pooled backbone features (``features``: float32, one row per example, in order; a row is
    (layers, width) when the model pools every layer) and ``labels``; with token pooling, every
    row's token vectors and token labels one after the other, and each row's length
    (``lengths``); where `transform` makes several inputs of a row (windows of a long text),
    one feature row per input and the row each is from (``documents``).

    The rows are transformed and padded as for evaluation (`transform` with
    ``train=False`` and the modality's collator), so the features equal what the
    uncached model computes inside its forward pass. Rows are read `sort_window`
    batches at a time and batched shortest first within that window, which cuts the
    padding of variable-length inputs (memory stays bounded by the window).
    """
    was_training = model.training
    model.eval()
    model.to(device)
    n = len(ds)
    parts: list[tuple[torch.Tensor, torch.Tensor | None, list[int] | None]] = []  # each window of rows: features, labels, documents
    rows_out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # token pooling: row -> (features, labels)
    window = batch_size * sort_window
    try:
        with bar(n, desc, unit="ex", enabled=progress) as shown:
            for start in range(0, n, window):
                rows = transform(ds[start : start + window])
                documents = rows.pop("document", None)  # long texts as windows: several inputs a row
                examples = [{k: v[i] for k, v in rows.items()} for i in range(len(next(iter(rows.values()))))]
                features: torch.Tensor | None = None
                labels: torch.Tensor | None = None
                # Shortest first within the window: batches of like lengths, little padding.
                order = sorted(range(len(examples)), key=lambda i: _size(examples[i]))
                for first in range(0, len(order), batch_size):
                    chunk = order[first : first + batch_size]
                    batch = collator([examples[i] for i in chunk])
                    batch_labels = batch.pop("labels", None)
                    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                    with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                        pooled = model.features(**batch).float().cpu()
                    if model.pooling == "token":  # a vector per token: each row's own tokens, kept apart
                        mask = batch["attention_mask"].bool().cpu()
                        for position, row in enumerate(chunk):
                            rows_out[start + row] = (pooled[position][mask[position]], torch.as_tensor(batch_labels)[position][mask[position]])
                        shown.update(len(chunk))
                        continue
                    if features is None:
                        features = torch.empty(len(examples), *pooled.shape[1:])  # (inputs, width) or (inputs, layers, width)
                    index = torch.tensor(chunk)
                    features[index] = pooled
                    if batch_labels is not None:
                        if labels is None:  # a class id, a number (regression) or a multi-hot row (multi-label)
                            shaped = torch.as_tensor(batch_labels)
                            labels = torch.empty(len(examples), *shaped.shape[1:], dtype=shaped.dtype)
                        labels[index] = torch.as_tensor(batch_labels)
                    shown.update(len(chunk) if documents is None else 0)
                if documents is not None:  # windows: the bar counts rows
                    shown.update(min(window, n - start))
                if features is not None:
                    parts.append((features, labels, None if documents is None else [start + d for d in documents]))
    finally:
        model.train(was_training)
    if rows_out:  # token pooling: every row's tokens, one after the other, and the row lengths
        ordered = [rows_out[i] for i in range(n)]
        return {
            "features": torch.cat([f for f, _ in ordered]),
            "labels": torch.cat([t for _, t in ordered]),
            "lengths": torch.tensor([len(f) for f, _ in ordered]),
        }
    assert parts, "no rows to extract features from"
    out = {"features": torch.cat([f for f, _, _ in parts])}
    if parts[0][1] is not None:
        out["labels"] = torch.cat([t for _, t, _ in parts if t is not None])
    if parts[0][2] is not None:  # windows of long texts: the row each is from
        out["documents"] = torch.tensor([d for _, _, docs in parts for d in docs or []])
    return out


def _size(example: dict[str, Any]) -> int:
    """Length of an example's longest sequence input (token ids, audio samples); 0 if fixed."""
    sizes = [len(v) for k, v in example.items() if k != "labels" and hasattr(v, "__len__") and not isinstance(v, str)]
    return max(sizes, default=0)


@dataclass
class CachedSplit:
    """One split's features and where they came from."""

    dataset: datasets.Dataset  # columns: features (float32 vectors) and labels
    path: Path
    hit: bool
    seconds: float


def _as_dataset(tensors: dict[str, torch.Tensor]) -> datasets.Dataset:
    """The features as a dataset of ``features`` (and ``labels``; ``document`` for windows of
    long texts); with ``lengths`` (token pooling), each row its tokens' vectors and labels."""
    features, labels, lengths = tensors["features"], tensors.get("labels"), tensors.get("lengths")
    if lengths is not None:
        ends = lengths.cumsum(0).tolist()
        starts = [0, *ends[:-1]]
        columns: dict[str, Any] = {"features": [features[a:b].numpy() for a, b in zip(starts, ends)]}
        if labels is not None:
            columns["labels"] = [labels[a:b].numpy() for a, b in zip(starts, ends)]
        return datasets.Dataset.from_dict(columns).with_format("torch")
    columns = {"features": features.numpy()}
    if labels is not None:
        columns["labels"] = labels.numpy()
    if "documents" in tensors:
        columns["document"] = tensors["documents"].numpy()
    return datasets.Dataset.from_dict(columns).with_format("torch")


def rows_stored(tensors: dict[str, torch.Tensor]) -> int:
    """How many rows of the split a cache entry holds features of."""
    if "lengths" in tensors:
        return len(tensors["lengths"])
    if "documents" in tensors:
        return int(tensors["documents"].max()) + 1 if len(tensors["documents"]) else 0
    return len(tensors["features"])


def load_or_extract(
    cfg: RunConfig,
    modality: Modality,
    processor: Any,
    model: PooledClassifier,
    ds: datasets.Dataset,
    split: str,
    args: TrainingArguments | None = None,
    processor_hash: str | None = None,
    root: Path | None = None,
    store: bool = True,
) -> CachedSplit:
    """The split's features from the cache, or computed now and stored there.

    ``store=False``: computed now and kept in memory only, for a body the key cannot
    identify (contrastive tuning changed it during this run).
    """
    start = time.perf_counter()
    device = args.device if args is not None else torch.device("cpu")
    autocast_dtype = None
    if args is not None and device.type == "cuda" and (args.bf16 or args.fp16):
        autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16
    batch_size = extraction_batch_size(args, cfg.modality)
    media_column = {"image": cfg.data.image_column, "audio": cfg.data.audio_column}.get(cfg.modality)
    parts = key_parts(
        cfg,
        processor_hash or processor_identity(processor),
        model.pooling if model.layer_weights is None else f"{model.pooling} of every layer",
        split,
        dataset_fingerprint(ds),
        str(autocast_dtype or torch.float32).removeprefix("torch."),
        media=media_identity(ds, media_column),
        eval_batch_size=batch_size,
    )
    folder = (root or cache_root()) / feature_key(parts)
    if store and (folder / FEATURES_FILE).is_file():
        try:
            tensors = load_file(str(folder / FEATURES_FILE))
            if rows_stored(tensors) == len(ds):
                found = _as_dataset(tensors)
                return CachedSplit(found, folder, True, time.perf_counter() - start)
        except Exception:  # noqa: BLE001 - an unreadable entry is recomputed and replaced
            pass
    tensors = extract_features(
        model,
        ds,
        modality.transform(processor, cfg, train=False),
        modality.collator(processor, cfg, model),
        batch_size=batch_size,
        device=device,
        autocast_dtype=autocast_dtype,
        desc=f"features ({split})",
        progress=not (args.disable_tqdm if args is not None else False),
    )
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / FEATURES_FILE))
        (tmp / KEY_FILE).write_text(json.dumps(parts, indent=2, sort_keys=True, default=str) + "\n")

    if store:
        try:
            atomic_save_dir(folder, write, replace=False)  # another run may have stored the same features meanwhile
        except WriteError as exc:  # the temporary folder is gone: no entry is stored half-written
            exc.kept.append(f"the feature cache ({folder.parent}, ${CACHE_ENV}) stores no part of the entry")
            raise
    return CachedSplit(_as_dataset(tensors), folder, False, time.perf_counter() - start)


LARGE_BATCH = 256  # rows a forward pass when features are extracted on a GPU


def extraction_batch_size(args: TrainingArguments | None, modality: str) -> int:
    """Rows a forward pass while features are extracted: the evaluation batch, and on a GPU at
    least 256 for text and images, whose pooled features do not depend on the batch (a frozen
    forward pass is memory-light, and small batches leave the chip idle). Audio keeps the
    evaluation batch: wav2vec2's group norm sees the padding of the batch a clip is in."""
    size = args.per_device_eval_batch_size if args is not None else 32
    if args is not None and args.device.type == "cuda" and modality != "audio":
        return max(size, LARGE_BATCH)
    return size


@dataclass
class FeatureCache:
    """The feature datasets of a run's splits, and what the cache did."""

    splits: dict[str, datasets.Dataset]
    entries: dict[str, CachedSplit]

    @property
    def hit(self) -> bool:
        return all(entry.hit for entry in self.entries.values())

    @property
    def seconds(self) -> float:
        return sum(entry.seconds for entry in self.entries.values())

    def results(self) -> dict[str, Any]:
        """Flat keys for all_results.json."""
        return {
            "feature_cache_hit": self.hit,
            "feature_cache_seconds": round(self.seconds, 3),
            "feature_cache_dir": str(next(iter(self.entries.values())).path.parent),
        }


def cached_splits(
    cfg: RunConfig,
    modality: Modality,
    processor: Any,
    model: PooledClassifier,
    splits: dict[str, datasets.Dataset],
    args: TrainingArguments | None = None,
    store: bool = True,
) -> FeatureCache:
    """Features of every split (from the cache or computed once; ``store=False``: computed for
    this run only, for a body the key cannot identify). With several processes the main
    process computes and writes first; the others then read."""
    import contextlib

    processor_hash = processor_identity(processor)
    guard = args.main_process_first(desc="feature cache") if args is not None else contextlib.nullcontext()
    with guard:
        entries = {
            name: load_or_extract(cfg, modality, processor, model, ds, name, args, processor_hash, store=store)
            for name, ds in splits.items()
        }
    return FeatureCache({name: entry.dataset for name, entry in entries.items()}, entries)


def token_feature_collator(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pads cached rows of token vectors (tokens, width) into a batch: zeros, and labels of
    -100, which the loss ignores."""
    from torch.nn.utils.rnn import pad_sequence

    batch = {"features": pad_sequence([e["features"] for e in examples], batch_first=True)}
    if "labels" in examples[0]:
        batch["labels"] = pad_sequence([torch.as_tensor(e["labels"]) for e in examples], batch_first=True, padding_value=-100)
    return batch


def feature_collator(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stacks cached feature vectors (and labels) into a batch."""
    batch = {"features": torch.stack([e["features"] for e in examples])}
    if "labels" in examples[0]:
        batch["labels"] = torch.stack([torch.as_tensor(e["labels"]) for e in examples])
    return batch


__all__ = [
    "CACHE_ENV",
    "CachedSplit",
    "FeatureCache",
    "cache_root",
    "cached_splits",
    "extract_features",
    "feature_collator",
    "token_feature_collator",
    "feature_key",
    "key_parts",
    "load_or_extract",
    "model_identity",
    "processor_identity",
]
