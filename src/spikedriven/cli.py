"""The ``spikedriven`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import SpikedrivenError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikedriven", description="Spike-driven Transformers with LIF / IF neurons.")
    parser.add_argument("--version", action="version", version=f"spikedriven {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        parser.print_help()
        return 0
    except SpikedrivenError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
