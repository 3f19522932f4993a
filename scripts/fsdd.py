"""The Free Spoken Digit Dataset split by speaker, for the audio benchmarks and recipes.

``../shared/datasets/fsdd/recordings`` holds 2,500 WAV files (8 kHz mono) named
``{digit}_{speaker}_{index}.wav``: five speakers, 50 takes of each digit. Speakers are
natural domains: one is held out, the other four train. This writes the CSV manifests
tlhub reads (``tlhub.demo.fsdd_manifests``: path relative to the manifest, the digit's
word as class label and as transcript, the speaker):

    python scripts/fsdd.py data/fsdd [--holdout theo]     # data/fsdd/train.csv, data/fsdd/heldout.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tlhub.demo import fsdd_manifests

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fsdd" / "recordings"


def write_manifests(out: Path, holdout: str = "theo", recordings: Path = RECORDINGS) -> tuple[Path, Path]:
    """train.csv (four speakers) and heldout.csv (the held-out one) in `out`; return their paths."""
    if not recordings.is_dir():
        sys.exit(f"{recordings} is absent: FSDD lives in ../shared/datasets/fsdd beside the project")
    return fsdd_manifests(recordings, out, holdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for train.csv and heldout.csv")
    parser.add_argument("--holdout", default="theo", help="the speaker held out (george, jackson, nicolas, theo, yweweler)")
    parser.add_argument("--recordings", type=Path, default=RECORDINGS)
    args = parser.parse_args()
    print(*write_manifests(args.out, args.holdout, args.recordings), sep="\n")


if __name__ == "__main__":
    main()
