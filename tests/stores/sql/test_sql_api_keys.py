"""API keys in the database: created and revoked with ``keys``, verified by every instance,
and a revocation made anywhere refused everywhere within the feed's bound, well inside the
credential cache's own time to live (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from illumichat_authz import Authorizer, RequestFacts, load_settings
from illumichat_authz.cli import main
from illumichat_authz.facts import Membership
from illumichat_authz.stores.sql import migrate
from illumichat_authz.stores.sql.database import Database

pytestmark = pytest.mark.interop


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'authz.db'}"
    else:
        url = str(request.getfixturevalue("fresh_database"))
    path = tmp_path / "authz.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\npoll_interval_s = 0.05\n[api_keys]\ncache_ttl_s = 300\n'
    )
    database = Database(load_settings(path, environment=False).database)
    migrate.upgrade(database.engine)
    database.writer.apply(upsert=[Membership(user="bob", workspace="w1", role="member")])
    database.close()
    return path


def _list(authorizer: Authorizer, token: str) -> int:
    request = RequestFacts.build(
        method="GET",
        path="/api/assistants",
        headers=[("authorization", f"Bearer {token}")],
    )
    return int(authorizer.decide(request).status)


def test_a_key_revoked_through_the_cli_is_refused_by_a_running_instance(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["keys", "create", "--config", str(config), "--user", "bob", "--workspace", "w1"]) == 0
    )
    token = capsys.readouterr().out.splitlines()[0]
    assert main(["keys", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "bob" in listed
    assert token not in listed
    authorizer = Authorizer.from_settings(load_settings(config, environment=False))
    try:
        assert _list(authorizer, token) == 200
        assert _list(authorizer, token) == 200  # now from the credential cache (300 s)
        assert main(["keys", "revoke", "--config", str(config), token]) == 0
        deadline = time.monotonic() + 2
        while _list(authorizer, token) == 200:
            assert time.monotonic() < deadline, "the revocation did not arrive"
            time.sleep(0.005)
        assert _list(authorizer, token) == 401
    finally:
        authorizer.close()
