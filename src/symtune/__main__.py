"""`python -m symtune` is the `symtune` command."""

import sys

from .cli import main

sys.exit(main())
