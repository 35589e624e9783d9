"""The ``illumichat-authz`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``handler``: a function of the parsed arguments returning the
exit code. Configuration errors exit 2 with the message on stderr, never a traceback; an
interrupt (Ctrl-C) exits 130, as a shell reports a process that SIGINT stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from .. import __version__
from ..errors import ConfigurationError, DependencyUnavailableError
from ._common import EXIT_INTERRUPTED

__all__ = ["main"]

# Sub-command modules, in the order `--help` lists them.
_COMMANDS = ("decide", "policy", "keys", "tokens", "db", "facts", "audit", "serve", "demo")

Handler = Callable[[argparse.Namespace], int]


_VERBOSE_HELP = "log decisions to stderr"


class _SubcommandParser(argparse.ArgumentParser):
    """A sub-command's parser: it accepts ``-v`` too (``decide -v``, not only ``-v decide``).

    The default is suppressed so a sub-command without ``-v`` leaves the top-level value.
    Nested sub-parsers get this class as well (argparse uses the parent parser's class).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="illumichat-authz",
        description="IllumiChat authentication and authorization decisions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_SubcommandParser
    )
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
    except DependencyUnavailableError as exc:  # a database that cannot be reached
        print(f"illumichat-authz: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
