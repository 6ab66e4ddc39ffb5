"""``python -m prism_kernels ...`` is the ``prism`` command."""

import sys

from .cli import main

sys.exit(main())
