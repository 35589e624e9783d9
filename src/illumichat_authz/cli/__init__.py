"""The ``illumichat-authz`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``handler``: a function of the parsed arguments returning the
exit code. Configuration errors exit 2 with the message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from ..errors import ConfigurationError

__all__ = ["main"]

# Sub-command modules, in the order `--help` lists them.
_COMMANDS = ("decide", "policy", "keys", "tokens", "serve", "demo")

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="illumichat-authz",
        description="IllumiChat authentication and authorization decisions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log decisions to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(__name__):
                continue  # sub-command not shipped in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigurationError as exc:
        print(f"illumichat-authz: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
