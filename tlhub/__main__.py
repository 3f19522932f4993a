"""`python -m tlhub ...` (and `accelerate launch -m tlhub train CONFIG`)."""

import sys

from tlhub.cli import main

sys.exit(main())
