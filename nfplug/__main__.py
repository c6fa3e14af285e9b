"""``python -m nfplug``: the ``nfplug`` command (for example under ``torchrun`` or where scripts are not on PATH)."""

import sys

from nfplug.cli import main

sys.exit(main())
