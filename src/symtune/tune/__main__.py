"""`python -m symtune.tune ...` = `symtune tune ...`; handy after `accelerate launch -m`."""

import argparse
import logging
import sys

from .cli import add_tune_parser


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m symtune.tune")
    sub = parser.add_subparsers(dest="command")
    sp = add_tune_parser(sub)
    sp.prog = "python -m symtune.tune"
    sp.add_argument("-v", "--verbose", action="store_true")
    args = sp.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ValueError as e:
        if not type(e).__module__.startswith("symtune"):
            raise
        print(f"symtune tune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
