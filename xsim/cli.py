"""The ``xsim`` command line: a thin layer over the Python API (each command parses its
arguments and calls one public function)."""
from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xsim",
        description="X-ray simulation from CT: reference Monte Carlo, learned scatter, fast rendering.",
    )
    parser.add_argument("--version", action="version", version=f"xsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show versions, physics tables and kernel backends")
    info.set_defaults(func=_cmd_info)
    return parser


def _cmd_info(args: argparse.Namespace) -> int:
    from .paths import kernels_dir, physics_data_dir

    print(f"xsim {__version__}")
    print(f"physics tables: {physics_data_dir()}")
    print(f"kernel sources: {kernels_dir()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
