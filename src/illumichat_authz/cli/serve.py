"""``illumichat-authz serve``: run the forward-auth server (and AuthZEN) under uvicorn.

The AuthZEN endpoints answer only when a bearer token is given (``--authzen-token`` or
``ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN``): a decision API without authentication would tell
anyone who may do what. Without a token they are 404.

With ``--workers N`` uvicorn starts N processes, each building the app with
``illumichat_authz.server:create_app_from_env`` from the variables this command sets; the
configuration is checked here first, so a mistake exits 2 before any worker starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import load_settings
from ..errors import ConfigurationError
from ._common import EXIT_INTERRUPTED as _EXIT_INTERRUPTED
from ._common import add_config_flag

__all__ = ["register"]

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


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
    parser.add_argument("--uds", metavar="PATH", help="listen on this unix socket instead")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    parser.add_argument("--ssl-certfile", metavar="FILE", help="serve https with this certificate")
    parser.add_argument("--ssl-keyfile", metavar="FILE", help="its private key (PEM)")
    parser.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="warning",
        help="for uvicorn and the illumichat_authz loggers (default warning)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="one line per request on stdout (default off)",
    )
    parser.add_argument(
        "--max-header-bytes",
        type=int,
        default=None,
        metavar="N",
        help="request header bytes the h11 parser buffers (default 65536)",
    )
    parser.add_argument(
        "--authzen-token",
        metavar="TOKEN",
        help="bearer token AuthZEN callers must send (or $ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN); "
        "without one the AuthZEN endpoints are not served",
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="this server's base URL as AuthZEN clients reach it, for its metadata "
        "(or $ILLUMICHAT_AUTHZ_PUBLIC_URL; default: from each request's Host)",
    )
    parser.set_defaults(handler=_serve)


def _check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Load the certificate once here, so a wrong path is exit 2, not a traceback."""
    if certfile is None:
        if keyfile is not None:
            raise ConfigurationError("--ssl-keyfile needs --ssl-certfile")
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"--ssl-certfile/--ssl-keyfile: cannot load: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server import create_app, factory
    except ImportError:
        print(
            "illumichat-authz: serve needs the server extra: "
            'pip install "illumichat-authz[server]"',
            file=sys.stderr,
        )
        return 2
    from ..authorizer import Authorizer

    if args.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    token = factory.check_authzen_token(
        args.authzen_token or os.environ.get(factory.AUTHZEN_TOKEN_ENV) or None
    )
    public_url = args.public_url or os.environ.get(factory.PUBLIC_URL_ENV) or None
    _check_tls(args.ssl_certfile, args.ssl_keyfile)
    # The same file the factory reads: --config, else $ILLUMICHAT_AUTHZ_CONFIG.
    config = args.config or os.environ.get(factory.CONFIG_ENV) or None
    # Built here even with workers: a configuration error exits 2 before uvicorn starts.
    authorizer = Authorizer.from_settings(load_settings(config))
    app = create_app(authorizer=authorizer, authzen_token=token, public_url=public_url)
    options: dict[str, Any] = {
        **factory.UVICORN_OPTIONS,
        "log_config": factory.log_config(args.log_level, access_log=args.access_log),
        "log_level": None,
        "access_log": args.access_log,
        "ssl_certfile": args.ssl_certfile,
        "ssl_keyfile": args.ssl_keyfile,
    }
    if args.max_header_bytes is not None:
        options["h11_max_incomplete_event_size"] = args.max_header_bytes
    if args.uds:
        options["uds"] = args.uds
        where = f"unix:{args.uds}"
    else:
        options.update(host=args.host, port=args.port)
        where = f"{'https' if args.ssl_certfile else 'http'}://{args.host}:{args.port}"
    print(
        f"illumichat-authz: forward auth on {where}/auth"
        + ("; AuthZEN on /access/v1/evaluation(s)" if token else "; AuthZEN off (no token)")
        + (f"; {args.workers} workers" if args.workers > 1 else ""),
        file=sys.stderr,
    )
    if args.workers == 1:
        try:
            with _noting_interrupts() as interrupted:
                uvicorn.run(app, **options)
        finally:
            authorizer.close()
        return _EXIT_INTERRUPTED if interrupted else 0
    # Each worker process builds its own app (and its own change feed) from what this
    # process was given.
    authorizer.rate_limiter.close()
    authorizer.close()
    if config:
        os.environ[factory.CONFIG_ENV] = str(Path(config).resolve())
    if token:
        os.environ[factory.AUTHZEN_TOKEN_ENV] = token
    if public_url:
        os.environ[factory.PUBLIC_URL_ENV] = public_url
    with _noting_interrupts() as interrupted:
        uvicorn.run(
            "illumichat_authz.server:create_app_from_env",
            factory=True,
            workers=args.workers,
            **options,
        )
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
