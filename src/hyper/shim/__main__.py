"""``python -m hyper.shim POD_STATE_DIR [--config FILE]``: see :mod:`hyper.shim.supervisor`."""

import sys

from hyper.shim.supervisor import main

sys.exit(main())
