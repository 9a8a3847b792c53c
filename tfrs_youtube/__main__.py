"""`python -m tfrs_youtube` is the `tfrs-youtube` command."""

import sys

from tfrs_youtube.cli import main

sys.exit(main())
