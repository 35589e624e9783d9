"""``illumichat-authz tokens``: mint development session cookies.

``mint-session`` prints an Auth.js session cookie value (what ``@auth/core``'s ``encode``
writes) for the configured ``[session]`` settings, encrypted with the newest secret. Anyone
holding that secret can mint a session for any user, so the command refuses to run unless
``--dev-secret`` confirms the configured secret is a development one.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from illumichat_authz.credentials.authjs import encode_session_token

from ._common import add_config_flag, settings_from

__all__ = ["register"]

_MAX_EXPIRES_S = 365 * 86400


def _seconds(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if not 0 < seconds <= _MAX_EXPIRES_S:
        raise argparse.ArgumentTypeError(f"--expires-in must be between 1 and {_MAX_EXPIRES_S}")
    return seconds


def register(subparsers: Any) -> None:
    tokens = subparsers.add_parser("tokens", help="mint development credentials")
    sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    mint = sub.add_parser(
        "mint-session",
        help="print an Auth.js session cookie value (development secrets only)",
        description=(
            "Print an Auth.js session cookie value for [session] in the configuration. "
            "Refuses unless --dev-secret confirms the secret is a development one."
        ),
    )
    add_config_flag(mint)
    mint.add_argument("--user", required=True, help="user id (the session's user id claim)")
    mint.add_argument("--workspace", help="active workspace claim")
    mint.add_argument("--email", help="email claim")
    mint.add_argument("--name", help="name claim")
    mint.add_argument(
        "--expires-in",
        type=_seconds,
        default=3600,
        metavar="SECONDS",
        help="the session's lifetime (default 3600, at most a year)",
    )
    mint.add_argument(
        "--secure",
        action="store_true",
        help="mint for the __Secure- prefixed cookie name (the salt differs)",
    )
    mint.add_argument(
        "--dev-secret",
        action="store_true",
        help="confirm that the configured session secret is a development secret",
    )
    mint.set_defaults(handler=_mint_session)


def _mint_session(args: argparse.Namespace) -> int:
    # Settings first: with no secret at all, confirming it is a development one is moot.
    session = settings_from(args).session
    if not session.secrets:
        print(
            "illumichat-authz: [session] secrets is empty; nothing to mint with (set it in "
            "--config FILE or ILLUMICHAT_AUTHZ_SESSION__SECRETS)",
            file=sys.stderr,
        )
        return 2
    if not args.dev_secret:
        print(
            "illumichat-authz: refusing to mint a session: whoever holds the session secret "
            "can sign in as anyone. The secret must be a development one; pass --dev-secret "
            "to confirm it is.",
            file=sys.stderr,
        )
        return 2
    cookie_name = session.cookie_name
    if args.secure and not cookie_name.startswith(("__Secure-", "__Host-")):
        cookie_name = "__Secure-" + cookie_name
    claims: dict[str, Any] = {session.user_id_claim: args.user}
    if args.workspace is not None:
        claims[session.workspace_claim or "workspace"] = args.workspace
    if args.email is not None:
        claims[session.email_claim] = args.email
    if args.name is not None:
        claims[session.name_claim] = args.name
    token = encode_session_token(
        claims,
        secret=session.secrets[0],
        cookie_name=cookie_name,
        now=time.time(),
        max_age_s=args.expires_in,
    )
    print(token)
    print(f"cookie: {cookie_name} (expires in {args.expires_in} s)", file=sys.stderr)
    return 0
