"""``python -m lolsearch`` = the ``lolsearch`` command."""

import sys

from lolsearch.cli import main

sys.exit(main())
