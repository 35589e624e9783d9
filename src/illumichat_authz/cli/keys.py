"""``illumichat-authz keys``: create, list and revoke API keys.

``create`` prints the new key alone on the first line of stdout (so scripts can take
``head -n1``), then metadata; the key is never shown again. ``list`` never prints
secrets or digests. The database is ``[api_keys] database`` in the configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from illumichat_authz.config import load_settings
from illumichat_authz.credentials.apikeys import (
    API_KEY_PATTERN,
    ApiKeyRecord,
    ApiKeyStore,
    issue_api_key,
    looks_like_api_key,
    validate_scope,
)
from illumichat_authz.errors import ConfigurationError, DependencyUnavailableError
from illumichat_authz.policy import Policy
from illumichat_authz.stores.api_keys import SqliteApiKeyStore

from ._common import add_config_flag

__all__ = ["register"]


def _scope(value: str) -> str:
    try:
        return validate_scope(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds < 100 * 365 * 86400:
        raise argparse.ArgumentTypeError("--expires-in must be a positive number of seconds")
    return seconds


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = sub.add_parser(
        "create",
        help="mint a key (printed once, on the first line)",
        description=(
            "Mint an API key for a user in a workspace. The key is printed once, alone on "
            "the first line of stdout; store it then."
        ),
    )
    add_config_flag(create)
    create.add_argument("--user", required=True, help="user id the key acts as")
    create.add_argument("--workspace", required=True, help="workspace the key is bound to")
    create.add_argument(
        "--scope",
        action="append",
        type=_scope,
        metavar="ACTION",
        help="narrow the key to this action (resource:verb); repeatable; default: the role",
    )
    create.add_argument(
        "--expires-in", type=_seconds, metavar="SECONDS", help="lifetime (default: never expires)"
    )
    create.add_argument("--name", help="a label to recognise the key by")
    create.set_defaults(handler=_create)

    list_ = sub.add_parser(
        "list",
        help="list keys (never secrets)",
        description="List the keys in the database: ids, owners, scopes, status; never secrets.",
    )
    add_config_flag(list_)
    list_.add_argument("--workspace", help="only the keys bound to this workspace")
    list_.add_argument("--user", help="only the keys acting as this user id")
    list_.add_argument("--json", action="store_true", help="one JSON array on stdout")
    list_.set_defaults(handler=_list)

    revoke = sub.add_parser(
        "revoke",
        help="revoke a key",
        description=(
            "Revoke a key: new lookups refuse it at once, running processes that verified it "
            "within [api_keys] cache_ttl_s refuse it once that has passed."
        ),
    )
    add_config_flag(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (or the whole key)")
    revoke.set_defaults(handler=_revoke)


class _KeyStore(ApiKeyStore, Protocol):
    """A store the commands open and close, and name in their messages."""

    @property
    def path(self) -> object: ...

    def close(self) -> None: ...


def _store(args: argparse.Namespace) -> _KeyStore:
    """``[api_keys] database`` (a SQLite file), else the keys table of ``[database] url``."""
    settings = load_settings(args.config)
    database = settings.api_keys.database
    if database is not None:
        return SqliteApiKeyStore(database)
    if settings.database.url is not None:
        from illumichat_authz.stores import open_database
        from illumichat_authz.stores.sql.api_keys import SqlApiKeyStore

        opened = open_database(settings)
        return SqlApiKeyStore(opened.engine, close_with=opened.close)
    raise ConfigurationError(
        "no API key database configured: set [api_keys] database or [database] url in the "
        "configuration file (or ILLUMICHAT_AUTHZ_API_KEYS__DATABASE)"
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _public(record: ApiKeyRecord, now: float) -> dict[str, Any]:
    """The fields safe to show: no digest, no secret."""
    return {
        "key_id": record.key_id,
        "name": record.name,
        "user_id": record.user_id,
        "workspace": record.workspace,
        "scopes": None if record.scopes is None else sorted(record.scopes),
        "status": record.status(now=now),
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "revoked_at": _iso(record.revoked_at),
        "last_used_at": _iso(record.last_used_at),
    }


def _fail(message: str, code: int = 1) -> int:
    print(f"illumichat-authz keys: {message}", file=sys.stderr)
    return code


def _unknown_scopes(args: argparse.Namespace) -> list[str]:
    """Scopes that name no action of the configured policy (a key that could do nothing)."""
    if not args.scope:
        return []
    pol = load_settings(args.config).policies
    actions = Policy(model_path=pol.dir / pol.model, policy_path=pol.dir / pol.policy).actions
    return sorted(set(args.scope) - actions)


def _create(args: argparse.Namespace) -> int:
    now = time.time()
    unknown = _unknown_scopes(args)
    if unknown:
        return _fail(f"unknown scope(s) {unknown}: scopes are actions of the policy", 2)
    store = _store(args)
    try:
        token, record = issue_api_key(
            user_id=args.user,
            workspace=args.workspace,
            scopes=args.scope,
            expires_at=None if args.expires_in is None else now + args.expires_in,
            name=args.name,
            now=now,
        )
    except ValueError as exc:
        return _fail(str(exc), 2)
    try:
        store.add(record)
    except (DependencyUnavailableError, ValueError) as exc:
        return _fail(f"cannot store the key in {store.path}: {exc}")
    finally:
        store.close()
    print(token)
    info = _public(record, now)
    scopes = info["scopes"]
    info["scopes"] = "(not narrowed)" if scopes is None else " ".join(scopes) or "(none)"
    for field in ("key_id", "name", "user_id", "workspace", "scopes", "created_at", "expires_at"):
        print(f"{field}: {'' if info[field] is None else info[field]}")
    print("Store the key now: it cannot be shown again.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    now = time.time()
    store = _store(args)
    try:
        records = store.list(workspace=args.workspace, user=args.user)
    except DependencyUnavailableError as exc:
        return _fail(f"cannot read {store.path}: {exc}")
    finally:
        store.close()
    rows = [_public(r, now) for r in records]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("KEY_ID", "STATUS", "WORKSPACE", "USER", "SCOPES", "EXPIRES", "NAME")
    table = [header] + [
        (
            r["key_id"],
            r["status"],
            r["workspace"],
            r["user_id"],
            "*" if r["scopes"] is None else ",".join(r["scopes"]) or "-",
            r["expires_at"] or "never",
            r["name"] or "",
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace) -> int:
    key_id: str = args.key_id
    if looks_like_api_key(key_id):
        # A whole key was pasted: revoke it by its id, never echo it.
        match = API_KEY_PATTERN.fullmatch(key_id)
        if match is None:
            return _fail("that is not a well-formed API key or key id")
        key_id = match["key_id"]
    if not key_id.isascii() or not key_id.isalnum() or len(key_id) > 64:
        return _fail("that is not a well-formed key id")
    store = _store(args)
    try:
        found = store.revoke(key_id, now=time.time())
    except DependencyUnavailableError as exc:
        return _fail(f"cannot update {store.path}: {exc}")
    finally:
        store.close()
    if not found:
        return _fail(f"no API key with id {key_id}")
    print(f"revoked {key_id}")
    return 0
