"""The ``crampwatch`` command line.

Every subcommand is a module in :mod:`sensor_gateway.commands` that defines::

    HELP: str                                   # one line for ``crampwatch --help``
    def add_arguments(parser) -> None           # its own options
    def run(args) -> int                        # the exit code

Command modules import heavy dependencies inside ``run`` so ``--help`` stays fast.
Expected failures (:class:`~sensor_gateway.errors.CrampwatchError`,
:class:`cramp_signal.errors.SignalError`) print one line ``crampwatch: <message>``
and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import cast

from cramp_signal.errors import SignalError
from sensor_gateway import __version__, commands
from sensor_gateway.errors import CrampwatchError

log = logging.getLogger("crampwatch")


def _command_modules() -> list[tuple[str, ModuleType]]:
    found = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        found.append((info.name.replace("_", "-"), module))
    return found


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="crampwatch",
        description="Catch night-time calf cramps as they start.",
    )
    parser.add_argument("--version", action="version", version=f"crampwatch {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold on stderr (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _command_modules():
        help_text = cast(str, module.HELP)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crampwatch`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run = cast(Callable[[argparse.Namespace], int], args._run)
    try:
        return run(args)
    except (CrampwatchError, SignalError) as exc:
        print(f"crampwatch: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("crampwatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
