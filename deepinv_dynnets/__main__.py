"""``python -m deepinv_dynnets``: the ``dynnets`` command."""

import sys

from .cli import main

sys.exit(main())
