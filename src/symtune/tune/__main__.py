"""`python -m symtune.tune ...` = `symtune tune ...`; handy after `accelerate launch -m`."""

import sys

from symtune.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    verbose = [a for a in args if a in ("-v", "--verbose")]  # the CLI's -v comes before the command
    sys.exit(main([*verbose[:1], "tune", *(a for a in args if a not in verbose)]))
