"""``python -m combe``: the same as the ``combe`` command."""

import sys

from combe.cli import main

sys.exit(main())
