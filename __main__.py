"""`python -m normguard ...` is the `normguard` command."""

import sys

from .trainer.cli import main

sys.exit(main())
