"""A throwaway PostgreSQL cluster on loopback, for the tests of the SQL stores.

``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package (``.ci/run`` installs it),
run in a temporary directory; as root, the server runs as ``nobody`` (PostgreSQL refuses
to run as root). fsync is off: the data is thrown away. Each test asks for a database of
its own (``fresh_database``), created from ``template0`` in some tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "free_port", "fresh_database", "killing_listeners", "postgres"]


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(
            f"{name} is not installed: `apt-get install -y postgresql` (bash .ci/run does it)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster: ``start``, ``stop`` (also mid-test, to see the stores fail closed)."""

    def __init__(self) -> None:
        # Under /tmp itself: the server's user must be able to reach it (pytest's tmp_path
        # sits below a directory only root may enter).
        self.root = root = Path(tempfile.mkdtemp(prefix="authz-pg-"))
        self.data = root / "data"
        self.port = free_port()
        self._as_nobody = os.geteuid() == 0
        if self._as_nobody:
            os.chmod(root, 0o777)
        self._run(
            _binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            "authz",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._as_nobody:
            kwargs = {"user": "nobody", "group": "nogroup"}
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            cmd, check=True, capture_output=True, text=True, timeout=120, cwd=self.root, **kwargs
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        try:
            self._run(
                _binary("pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            )
        except subprocess.CalledProcessError as exc:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            pytest.fail(f"PostgreSQL did not start: {exc.stderr}\n{log[-2000:]}")

    def stop(self) -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://authz@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"postgresql://authz@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def fresh_database(postgres: PostgresServer) -> str:
    """The URL of an empty database of this test's own."""
    return postgres.create_database()


@contextlib.contextmanager
def killing_listeners(url: str, every_s: float) -> Iterator[list[int]]:
    """Terminate every LISTEN connection of the cluster at ``url`` every ``every_s`` while
    the block runs (a listener killed mid-run, again and again); yields ``[killed]``."""
    import threading

    from sqlalchemy import create_engine, text

    done = threading.Event()
    killed = [0]
    killer = create_engine(url, isolation_level="AUTOCOMMIT")

    def kill() -> None:
        with killer.connect() as conn:
            while not done.is_set():
                killed[0] += int(
                    conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                        )
                    ).scalar_one()
                )
                done.wait(every_s)

    thread = threading.Thread(target=kill, name="listener-killer")
    thread.start()
    try:
        yield killed
    finally:
        done.set()
        thread.join()
        killer.dispose()
