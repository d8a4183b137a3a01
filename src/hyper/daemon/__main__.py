"""``python -m hyper.daemon``: the same as ``hyperd``."""

import sys

from hyper.daemon.main import main

sys.exit(main())
