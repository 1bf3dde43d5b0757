"""``python -m mmesim ...``: the same as the ``mmesim`` command."""

import sys

from mmesim.cli import main

sys.exit(main())
