"""`python -m normguard ...` is the `normguard` command."""

from . import cli_main

cli_main()
