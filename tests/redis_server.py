"""Real Redis servers on loopback for the tests: one server, a Sentinel, a Cluster.

Started from Debian's ``redis-server`` (what ``.ci/run`` installs) as child processes with
no persistence, in a temporary directory; stopped (or killed, for a crash) by the test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

__all__ = ["RedisServer", "free_port", "start_cluster", "start_redis", "start_sentinel"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free and valid too."""
    for _ in range(1000):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: `apt-get install -y redis-server` "
            "(the Debian package the CI installs)"
        )
    return binary


@dataclass
class RedisServer:
    """One ``redis-server`` process; ``start`` again after ``stop`` reuses its port."""

    port: int
    args: list[str] = field(default_factory=list)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redis-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [_binary(), *self.args, "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--protected-mode", "yes", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            for _ in range(200):  # up to ~10 s for the server to accept connections
                if self.process.poll() is not None:
                    pytest.fail(f"redis-server exited with {self.process.returncode}")
                try:
                    if client.ping():
                        return self
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            self.stop()
            pytest.fail("redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def flush(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        client.flushall()
        client.close()


def start_redis(*args: str) -> RedisServer:
    return RedisServer(port=free_port(), args=list(args)).start()


def start_sentinel(master: RedisServer, service: str = "authz") -> RedisServer:
    """A Sentinel watching ``master`` as ``service`` (``redis+sentinel://.../service``)."""
    directory = Path(tempfile.mkdtemp(prefix="sentinel-"))
    conf = directory / "sentinel.conf"  # Sentinel rewrites its file: one of its own
    conf.write_text(
        f"sentinel monitor {service} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {service} 5000\n"
    )
    sentinel = RedisServer(port=free_port(), args=[str(conf), "--sentinel"], directory=directory)
    sentinel.start()
    client = redis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=1)
    try:
        for _ in range(200):
            if client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service):
                return sentinel
            time.sleep(0.05)
    finally:
        client.close()
    sentinel.stop()
    pytest.fail("redis sentinel did not see its master")


def start_cluster(nodes: int = 3) -> list[RedisServer]:
    """``nodes`` masters (no replicas) joined into one cluster, every slot assigned."""
    servers = [
        RedisServer(
            port=_cluster_port(),
            args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
        ).start()
        for _ in range(nodes)
    ]
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.fail("redis-cli is not installed (Debian's redis-tools)")
    subprocess.run(
        [cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
         "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=servers[0].port, socket_timeout=1)
    try:
        for _ in range(400):
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" in text:
                return servers
            time.sleep(0.05)
    finally:
        client.close()
    for server in servers:
        server.stop()
    pytest.fail("redis cluster did not reach cluster_state:ok")
