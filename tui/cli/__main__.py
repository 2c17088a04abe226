"""`python -m mltop.tui.cli`: the same as the `mltop` command."""

import sys

from mltop.tui.cli import main

sys.exit(main())
