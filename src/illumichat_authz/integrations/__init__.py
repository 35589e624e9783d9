"""Framework adapters: thin translations between a framework's request and the core.

Each adapter builds :class:`~illumichat_authz.request.RequestFacts`, calls
``Authorizer.decide``/``adecide`` and answers a denial with ``render_denial``. Import the
one you need (``illumichat_authz.integrations.asgi``, ``.wsgi``, ``.fastapi``,
``.flask``, ``.django``, ``.drf``); this package imports no framework, and each adapter whose
framework is missing raises ImportError naming the extra to install.
"""

from __future__ import annotations

__all__: list[str] = []
