"""``python -m dcplocal``: the ``dcplocal`` command (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
