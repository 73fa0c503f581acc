"""``python -m tokenbroker``."""

import sys

from tokenbroker.cli.main import main

sys.exit(main())
