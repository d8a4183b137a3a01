import sys

from hyper.cli.main import main

sys.exit(main())
