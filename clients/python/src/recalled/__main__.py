"""``python -m recalled spool status|retry-dead|purge-dead [--path P]``."""

import sys

from .spool.cli import main

sys.exit(main())
