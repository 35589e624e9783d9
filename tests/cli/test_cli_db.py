"""``db upgrade``, ``db check``, ``facts load``/``facts remove`` and ``decide`` on a database.

The command names and their exits are a contract other services call: upgrade is
idempotent, check exits 1 naming the problem, a database that cannot be reached is exit 1
with the driver's reason and never the password, and no command prints a traceback.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from illumichat_authz.cli import main
from illumichat_authz.credentials.authjs import encode_session_token
from postgres_server import free_port, fresh_database, postgres  # noqa: F401 (fixtures)

pytestmark = pytest.mark.interop

SECRET = "cli-db-secret-0123456789abcdef0123456789"


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)
    if request.param == "sqlite":
        url = "sqlite:///facts.db"  # relative to the configuration file
    else:
        url = request.getfixturevalue("fresh_database")
    path = tmp_path / "authz.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [session]
            secrets = ["{SECRET}"]
            workspace_claim = "ws"
            [database]
            url = "{url}"
            """
        )
    )
    return path


def _facts(tmp_path: Path, name: str, doc: dict[str, object]) -> str:
    file = tmp_path / name
    file.write_text(json.dumps(doc))
    return str(file)


def _decide(config: Path, capsys: pytest.CaptureFixture[str], user: str) -> int:
    token = encode_session_token({"sub": user, "ws": "w1"}, secret=SECRET, now=time.time())
    code = main(
        [
            "decide",
            "--config",
            str(config),
            "--path",
            "/api/assistants/a1",
            "--header",
            f"Cookie: authjs.session-token={token}",
        ]
    )
    out = capsys.readouterr().out
    return int(json.loads(out.splitlines()[-1])["status"]) if code in (0, 1) else code


def test_upgrade_check_load_decide_remove(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "check", "--config", str(config)]) == 1
    assert "db upgrade" in capsys.readouterr().err
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert "upgraded from migration none to 0003" in capsys.readouterr().out
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert "already at migration 0003" in capsys.readouterr().out
    assert main(["db", "check", "--config", str(config)]) == 0
    capsys.readouterr()

    doc = {
        "memberships": [
            {"user": "alice", "workspace": "w1", "role": "admin"},
            {"user": "bob", "workspace": "w1", "role": "member"},
        ],
        "assistants": [
            {"id": "a1", "workspace": "w1", "visibility": "workspace", "creator": "alice"}
        ],
    }
    assert main(["facts", "load", "--config", str(config), _facts(tmp_path, "f.json", doc)]) == 0
    assert "loaded 3 records; facts revision 1" in capsys.readouterr().out
    assert _decide(config, capsys, "bob") == 200
    assert _decide(config, capsys, "carol") == 403

    gone = {"memberships": [{"user": "bob", "workspace": "w1", "role": "member"}]}
    assert main(["facts", "remove", "--config", str(config), _facts(tmp_path, "g.json", gone)]) == 0
    assert "removed 1 records; facts revision 2" in capsys.readouterr().out
    assert _decide(config, capsys, "bob") == 403


def test_prune_deletes_old_change_log_rows_and_keeps_the_newest(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import select, update

    from illumichat_authz import load_settings
    from illumichat_authz.stores.sql.database import Database
    from illumichat_authz.stores.sql.schema import change_log

    assert main(["db", "upgrade", "--config", str(config)]) == 0
    for user in ("u1", "u2", "u3"):
        doc = {"memberships": [{"user": user, "workspace": "w1", "role": "member"}]}
        assert (
            main(["facts", "load", "--config", str(config), _facts(tmp_path, "f.json", doc)]) == 0
        )
    db = Database(load_settings(config).database)
    try:
        with db.engine.begin() as conn:  # every row a day old
            conn.execute(update(change_log).values(changed_at=change_log.c.changed_at - 86400))
        capsys.readouterr()
        assert main(["db", "prune", "--config", str(config), "--older-than", "90000"]) == 0
        assert "pruned 0 change-log rows" in capsys.readouterr().out
        assert main(["db", "prune", "--config", str(config), "--older-than", "3600"]) == 0
        assert "pruned 2 change-log rows" in capsys.readouterr().out
        with db.engine.connect() as conn:
            assert conn.execute(select(change_log.c.revision)).scalars().all() == [3]
        # A new instance starts at the newest revision: nothing to catch up.
        assert db.feed.check() == 3
    finally:
        db.close()
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(SystemExit) as exit_:
            main(["db", "prune", "--config", str(config), "--older-than", bad])
        assert exit_.value.code == 2


def test_a_bad_facts_file_is_exit_2_and_writes_nothing(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    bad = _facts(tmp_path, "bad.json", {"memberships": [{"user": "x", "workspace": "w1"}]})
    assert main(["facts", "load", "--config", str(config), bad]) == 2
    err = capsys.readouterr().err
    assert "memberships[0].role" in err
    assert "Traceback" not in err


def test_an_unreachable_database_is_exit_1_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    path = tmp_path / "authz.toml"
    path.write_text(f'[database]\nurl = "postgresql+psycopg://u:hunter2@127.0.0.1:{port}/db"\n')
    for command in (["db", "upgrade"], ["db", "check"]):
        assert main([*command, "--config", str(path)]) == 1
        err = capsys.readouterr().err
        assert "database is unavailable" in err
        assert "hunter2" not in err
        assert "Traceback" not in err


def test_no_database_configured_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "authz.toml"
    path.write_text("")
    assert main(["db", "check", "--config", str(path)]) == 2
    assert "set [database] url" in capsys.readouterr().err


def test_a_url_of_another_database_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "authz.toml"
    path.write_text('[database]\nurl = "mysql://u@h/db"\n')
    assert main(["db", "check", "--config", str(path)]) == 2
    assert "database.url" in capsys.readouterr().err
