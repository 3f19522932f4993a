"""Fine-tune a pretrained model as a YAML config describes: the same run as `tlhub train`.

    python recipes/finetune.py recipes/configs/text/minilm_sentiment_lora.yaml [section.key=value ...]
    accelerate launch recipes/finetune.py CONFIG [section.key=value ...]

The phases of a run (data -> model -> strategy -> Trainer -> results) read top to
bottom in `tlhub.pipeline.finetune`; this script is the command-line entry point
that parses the arguments, runs them and turns user errors into one line and exit 2.
"""

from __future__ import annotations

import sys

from tlhub.cli import main

if __name__ == "__main__":
    # Parse "CONFIG [overrides...]" exactly as `tlhub train` does, with the same errors.
    sys.exit(main(["train", *sys.argv[1:]]))
