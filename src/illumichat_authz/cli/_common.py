"""Pieces the sub-commands share: the --config flag and request-building flags."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings, load_settings
from ..errors import ConfigurationError
from ..request import RequestFacts

if TYPE_CHECKING:
    from ..stores.sql.database import Database

__all__ = [
    "EXIT_INTERRUPTED",
    "add_config_flag",
    "add_request_flags",
    "database_from",
    "request_from_flags",
    "settings_from",
]

#: 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration (ILLUMICHAT_AUTHZ_* environment variables override it)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


@contextlib.contextmanager
def database_from(args: argparse.Namespace) -> Iterator[Database]:
    """``[database]`` of the configuration, opened; a database error exits 1 with its
    reason (``DependencyUnavailableError``), a missing URL or extra is a configuration
    error."""
    from ..stores import open_database

    database = open_database(settings_from(args))
    from ..stores.sql.engine import unreachable  # the db extra is there: open_database ran

    try:
        with unreachable():
            yield database
    finally:
        database.close()


def add_request_flags(parser: argparse._ActionsContainer) -> None:
    """The flags that describe one request; ``parser`` may be an argument group."""
    parser.add_argument("--method", default="GET", help="HTTP method (default GET)")
    parser.add_argument("--path", help="raw request path as sent on the wire (percent-encoded)")
    parser.add_argument("--query", default="", help="raw query string, without '?'")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="a request header; repeat for more",
    )
    parser.add_argument("--body-file", metavar="FILE", help="request body (for webhooks)")
    parser.add_argument("--client-ip", help="address of the connection's peer")
    parser.add_argument(
        "--scheme",
        default="http",
        choices=["http", "https"],
        help="the scheme the client used (default http)",
    )


def request_from_flags(args: argparse.Namespace) -> RequestFacts:
    if not args.path:
        raise ConfigurationError("--path is required (or use --batch)")
    headers: list[tuple[str, str]] = []
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise ConfigurationError(f"--header {raw!r}: expected 'Name: value'")
        headers.append((name.strip(), value.strip()))
    body = None
    if args.body_file:
        try:
            body = Path(args.body_file).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"--body-file: {exc.strerror}: {args.body_file}") from None
    path, _, query = args.path.partition("?")
    return RequestFacts.build(
        method=args.method,
        path=path,
        query=args.query or query,
        headers=headers,
        body=body if body is not None else b"",
        peer=args.client_ip,
        scheme=args.scheme,
    )
