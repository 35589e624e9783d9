"""Framework adapters: thin translations between a framework's request and the core.

Import the one you need (``illumichat_authz.integrations.asgi``, ``.wsgi``, ``.fastapi``,
``.flask``, ``.django``, ``.drf``); each adapter whose framework is missing raises
ImportError naming the extra to install. This package imports no framework: its own names
are the framework-free pieces every adapter (and the forward-auth server) is built from,
for writing another one (docs/integrations.md, "Writing an adapter").
"""

from __future__ import annotations

from ._common import (
    answers_itself,
    check_host,
    read_bounded,
    read_wsgi_input,
    render,
    request_id,
    request_target,
)
from ._require import DECIDE, Endpoint, Incoming, arequire, require

__all__ = [
    "DECIDE",
    "Endpoint",
    "Incoming",
    "answers_itself",
    "arequire",
    "check_host",
    "read_bounded",
    "read_wsgi_input",
    "render",
    "request_id",
    "request_target",
    "require",
]
