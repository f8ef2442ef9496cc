"""``python -m intake_clms.cli``: the same as the ``intake-clms`` command."""

import sys

from . import main

sys.exit(main())
