"""Running the forward-auth server: the app factory, and the uvicorn settings ``serve`` uses.

``illumichat-authz serve`` is uvicorn with :data:`UVICORN_OPTIONS`. To run the app under
your own uvicorn command line (every uvicorn option, any number of workers), give it the
same two options and let each worker build the app from the environment::

    ILLUMICHAT_AUTHZ_CONFIG=authz.toml uvicorn --factory \\
        illumichat_authz.server:create_app_from_env \\
        --no-proxy-headers --h11-max-incomplete-event-size 65536 --workers 4

The factory reads ``ILLUMICHAT_AUTHZ_CONFIG`` (the TOML file; without it, settings come
from ``ILLUMICHAT_AUTHZ_*`` variables alone), ``ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN`` (serve
AuthZEN, protected by this bearer token) and ``ILLUMICHAT_AUTHZ_PUBLIC_URL`` (the base URL
AuthZEN clients use, for the metadata document). See docs/forward-auth.md.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from starlette.applications import Starlette

from ..authorizer import Authorizer
from ..config import load_settings
from ..errors import ConfigurationError
from .app import create_app

__all__ = [
    "AUTHZEN_TOKEN_ENV",
    "CONFIG_ENV",
    "MAX_HEADER_BYTES",
    "MIN_TOKEN_CHARS",
    "PUBLIC_URL_ENV",
    "UVICORN_OPTIONS",
    "check_authzen_token",
    "create_app_from_env",
    "log_config",
]

CONFIG_ENV = "ILLUMICHAT_AUTHZ_CONFIG"
AUTHZEN_TOKEN_ENV = "ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN"  # noqa: S105 - a variable name
PUBLIC_URL_ENV = "ILLUMICHAT_AUTHZ_PUBLIC_URL"
MIN_TOKEN_CHARS = 16
#: Request header bytes uvicorn's h11 parser buffers (its default is 16 KiB): the core's own
#: cap on a request's headers, so a large chunked Auth.js session is judged, not cut off.
MAX_HEADER_BYTES = 64 * 1024

#: What ``serve`` passes to uvicorn beyond host, port and logging:
#: * ``proxy_headers=False``: uvicorn would otherwise rewrite the client address and scheme
#:   from X-Forwarded-For/-Proto for its own ``--forwarded-allow-ips`` (127.0.0.1 by
#:   default), a second rule beside ``[proxies] trusted``; off, the library's rule is the
#:   only one and sees the real peer.
#: * ``h11_max_incomplete_event_size``: :data:`MAX_HEADER_BYTES` (httptools has no limit of
#:   its own).
UVICORN_OPTIONS: dict[str, Any] = {
    "proxy_headers": False,
    "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
}


def check_authzen_token(token: str | None) -> str | None:
    """The AuthZEN bearer token, or ``None`` (AuthZEN off); a short one is refused."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigurationError(f"the AuthZEN token must be at least {MIN_TOKEN_CHARS} characters")
    return token


def create_app_from_env() -> Starlette:
    """The forward-auth app configured by the environment alone (no arguments), for
    ``uvicorn --factory`` and for each of ``serve --workers``'s processes."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    return create_app(
        authorizer=Authorizer.from_settings(settings),
        authzen_token=check_authzen_token(os.environ.get(AUTHZEN_TOKEN_ENV) or None),
        public_url=os.environ.get(PUBLIC_URL_ENV) or None,
    )


def log_config(level: str, *, access_log: bool) -> dict[str, Any]:
    """uvicorn's logging configuration with ``level`` for its errors and for this
    library's loggers (``illumichat_authz.*``: denials with a 5xx, store failures), and the
    access log (one line per request, at INFO) on or off whatever ``level`` is."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    name = level.upper()
    config["formatters"]["authz"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
    }
    config["handlers"]["authz"] = {
        "formatter": "authz",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    loggers = config["loggers"]
    loggers["uvicorn.error"]["level"] = name
    loggers["illumichat_authz"] = {"handlers": ["authz"], "level": name, "propagate": False}
    if not access_log:
        loggers["uvicorn.access"] = {"handlers": [], "level": "CRITICAL", "propagate": False}
    return config
