"""``illumichat-authz serve``: run the forward-auth server (and AuthZEN) under uvicorn.

The AuthZEN endpoints answer only when a bearer token is given (``--authzen-token`` or
``ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN``): a decision API without authentication would tell
anyone who may do what. Without a token they are 404.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from ._common import EXIT_INTERRUPTED as _EXIT_INTERRUPTED
from ._common import add_config_flag, settings_from

__all__ = ["AUTHZEN_TOKEN_ENV", "register"]

AUTHZEN_TOKEN_ENV = "ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN"  # noqa: S105 - a variable name
_MIN_TOKEN_CHARS = 16


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the forward-auth server (nginx auth_request, Traefik, Envoy; AuthZEN)",
        description=(
            "Serve /auth for reverse proxies, /healthz, /readyz and, with a token, the "
            "AuthZEN access evaluation API. Needs the 'server' extra."
        ),
    )
    add_config_flag(parser)
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=9180, help="default: 9180")
    parser.add_argument(
        "--authzen-token",
        metavar="TOKEN",
        help=f"bearer token AuthZEN callers must send (or ${AUTHZEN_TOKEN_ENV}); "
        "without one the AuthZEN endpoints are not served",
    )
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server import create_app
    except ImportError:
        print(
            "illumichat-authz: serve needs the server extra: "
            'pip install "illumichat-authz[server]"',
            file=sys.stderr,
        )
        return 2
    from ..authorizer import Authorizer

    token = args.authzen_token or os.environ.get(AUTHZEN_TOKEN_ENV) or None
    if token is not None and len(token) < _MIN_TOKEN_CHARS:
        print(
            f"illumichat-authz: the AuthZEN token must be at least {_MIN_TOKEN_CHARS} characters",
            file=sys.stderr,
        )
        return 2
    authorizer = Authorizer.from_settings(settings_from(args))
    app = create_app(authorizer=authorizer, authzen_token=token)
    print(
        f"illumichat-authz: forward auth on http://{args.host}:{args.port}/auth"
        + ("; AuthZEN on /access/v1/evaluation(s)" if token else "; AuthZEN off (no token)"),
        file=sys.stderr,
    )
    with _noting_interrupts() as interrupted:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return _EXIT_INTERRUPTED if interrupted else 0


@contextlib.contextmanager
def _noting_interrupts() -> Iterator[list[int]]:
    """Note a Ctrl-C that ``uvicorn.run`` swallows, so ``serve`` exits 130 as documented.

    uvicorn stops gracefully on SIGINT, then raises the signal again to the handler it
    found (this one) and catches the ``KeyboardInterrupt`` it raises. Before uvicorn
    listens, the ``KeyboardInterrupt`` reaches ``main`` (130) as without this handler.
    """
    seen: list[int] = []

    def interrupted(signum: int, _frame: object) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)
