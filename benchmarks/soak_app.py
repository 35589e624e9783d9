"""The small app behind ``AuthzMiddleware`` that ``benchmarks/soak.py`` runs under uvicorn.

``uvicorn soak_app:create_app --factory`` with ``SOAK_AUTHZ_CONFIG`` naming the soak's
TOML file: the same configuration the ``serve`` instances use, so every instance of the
fleet decides from one database, one Redis and one published policy.
"""

from __future__ import annotations

import os
from typing import Any

from illumichat_authz import Authorizer, load_settings
from illumichat_authz.integrations.asgi import AuthzMiddleware


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 to whatever the middleware lets through (the body it replays is read)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def create_app() -> AuthzMiddleware:
    """The uvicorn factory: one Authorizer from the soak's configuration file."""
    settings = load_settings(os.environ["SOAK_AUTHZ_CONFIG"])
    return AuthzMiddleware(ok_app, authorizer=Authorizer.from_settings(settings))
