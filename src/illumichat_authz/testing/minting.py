"""Minting test credentials: session cookies, RS256 bearer tokens, API keys, Twilio signatures.

Everything here produces the same bytes the real issuers do, so a test exercises the real
verifiers end to end: session cookies are what ``@auth/core``'s ``encode`` writes (via
:func:`~illumichat_authz.credentials.authjs.encode_session_token`), bearer tokens are
PyJWT-signed RS256 JWTs under a local key pair whose JWKS a loopback server publishes, and
:func:`sign_twilio` is Twilio's documented algorithm (checked against the ``twilio``
package in our own tests). None of this is for production: the secrets are test secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "AUTHJS_CHUNK_SIZE",
    "JwksServer",
    "LocalIssuer",
    "MintedCookie",
    "chunk_session_cookie",
    "session_cookie",
    "sign_twilio",
]

#: The Auth.js cookie name; the key derivation uses it as the salt.
SESSION_COOKIE = "authjs.session-token"
#: ``@auth/core`` ``lib/utils/cookie.js``: ``CHUNK_SIZE = ALLOWED_COOKIE_SIZE -
#: ESTIMATED_EMPTY_COOKIE_SIZE``, that is 4096 - 160 characters of value per cookie.
AUTHJS_CHUNK_SIZE = 4096 - 160


def chunk_session_cookie(name: str, value: str) -> list[tuple[str, str]]:
    """The cookies Auth.js sets for a session token: ``SessionStore#chunk``.

    One cookie ``name`` when the value fits in :data:`AUTHJS_CHUNK_SIZE` characters, else
    ``name.0``, ``name.1``, ... of that many characters each ("Given a cookie value, return
    new cookies, chunked, to fit the allowed cookie size").
    """
    count = -(-len(value) // AUTHJS_CHUNK_SIZE)
    if count <= 1:
        return [(name, value)]
    size = AUTHJS_CHUNK_SIZE
    return [(f"{name}.{i}", value[i * size : (i + 1) * size]) for i in range(count)]


class MintedCookie(str):
    """A ``Cookie`` header value (``name=value``, or Auth.js chunks ``name.0=...; name.1=...``)
    that also gives its parts.

    As a string it goes in a ``Cookie`` header (httpx, Starlette's ``TestClient``, Django's
    client, ``make_request(cookie=...)``). Werkzeug's client (Flask's ``app.test_client()``)
    owns its cookies: it drops a ``Cookie`` header passed by hand and sends its own jar, so
    it takes the parts: ``client.set_cookie(cookie.name, cookie.value)``, or for a chunked
    session ``for name, value in cookie.pairs: client.set_cookie(name, value)``.
    """

    __slots__ = ()

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` in the header, in order (one, unless chunked)."""
        return [(n, v) for n, _, v in (part.partition("=") for part in self.split("; "))]

    @property
    def name(self) -> str:
        return self._single()[0]

    @property
    def value(self) -> str:
        return self._single()[1]

    def _single(self) -> tuple[str, str]:
        pairs = self.pairs
        if len(pairs) != 1:
            raise ValueError(f"this session comes in {len(pairs)} chunked cookies: use .pairs")
        return pairs[0]


def session_cookie(
    user: str,
    *,
    secret: str,
    workspace: str | None = None,
    workspace_claim: str = "workspace",
    cookie_name: str = SESSION_COOKIE,
    email: str | None = None,
    name: str | None = None,
    expires_in: int = 3600,
    now: float | None = None,
    claims: Mapping[str, Any] | None = None,
) -> MintedCookie:
    """A ``Cookie`` header value carrying an Auth.js session for ``user`` (a
    :class:`MintedCookie`: ``.name`` and ``.value`` for clients that own their cookies).

    Auth.js ``encode``: ``{...claims, iat, exp: iat + maxAge, jti}``, JWE ``dir`` with a
    key derived from the secret and the cookie name (the salt). A token longer than one
    cookie holds (large ``claims``) comes in chunks as Auth.js sets them
    (:func:`chunk_session_cookie`): ``name.0=...; name.1=...``, as a browser sends them.
    """
    from illumichat_authz.credentials.authjs import encode_session_token

    payload: dict[str, Any] = {"sub": user}
    if workspace is not None:
        payload[workspace_claim] = workspace
    if email is not None:
        payload["email"] = email
    if name is not None:
        payload["name"] = name
    payload.update(claims or {})
    token = encode_session_token(
        payload,
        secret=secret,
        cookie_name=cookie_name,
        now=time.time() if now is None else now,
        max_age_s=expires_in,
    )
    return MintedCookie("; ".join(f"{k}={v}" for k, v in chunk_session_cookie(cookie_name, token)))


def sign_twilio(url: str, params: Mapping[str, str | Iterable[str]], *, token: str) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a form POST to ``url``.

    Twilio's algorithm: "Take the full URL of the request URL you specify for your phone
    number or app, from the protocol (https...) through the end of the query string";
    "sort the list of POST variables by the parameter name"; "append each POST variable,
    name and value, to the string with no delimiters"; "sign the resulting string with
    HMAC-SHA1 using your AuthToken as the key"; "Base64 encode the resulting hash value".
    """
    data = url
    for key in sorted(params):
        value = params[key]
        # twilio-python's RequestValidator signs each distinct value once, sorted.
        values = [value] if isinstance(value, str) else sorted(set(value))
        for item in values:
            data += key + item
    mac = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass(slots=True)
class LocalIssuer:
    """A stand-in Auth0 tenant: an RSA key pair, its JWKS, and RS256 access tokens."""

    issuer: str
    audience: str
    kid: str = field(default_factory=lambda: f"test-{secrets.token_hex(4)}")
    _private: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._private is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        """The public half, as ``/.well-known/jwks.json`` serves it."""
        from jwt.algorithms import RSAAlgorithm

        jwk = json.loads(RSAAlgorithm.to_jwk(self._private.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def mint(
        self,
        user: str,
        *,
        workspace: str | None = None,
        workspace_claim: str | None = None,
        audience: str | list[str] | None = None,
        issuer: str | None = None,
        expires_in: int = 3600,
        now: float | None = None,
        claims: Mapping[str, Any] | None = None,
        kid: str | None = None,
    ) -> str:
        """An RS256 access token for ``user``, signed with this issuer's key."""
        import jwt

        iat = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "sub": user,
            "aud": audience or self.audience,
            "iat": iat,
            "exp": iat + expires_in,
            "jti": uuid.uuid4().hex,
        }
        if workspace is not None:
            payload[workspace_claim or "https://illumichat.com/workspace"] = workspace
        payload.update(claims or {})
        headers = {"kid": kid or self.kid, "typ": "JWT"}
        return jwt.encode(payload, self._private, algorithm="RS256", headers=headers)


class JwksServer:
    """Serves a JWKS document on ``http://127.0.0.1:<port>/.well-known/jwks.json``.

    Loopback only; counts fetches so tests can see the cache at work.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = dict(document)
        self.fetches = 0
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                server_ref.fetches += 1
                body = json.dumps(server_ref.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/.well-known/jwks.json"

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
