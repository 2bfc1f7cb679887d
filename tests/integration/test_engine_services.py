"""The engine of issue 22 against the real servers: devstack.engine starts its own PostgreSQL cluster and a
Redis on loopback, PostgreSQL answers SQL through the URL Airflow will get, Redis answers PING, and stop
leaves no process and no port behind, even after the postmaster was killed with SIGKILL.

Uses none of the session stack's fixtures: each test starts what it needs in a temporary folder of its
own (a few seconds in all). Skipped only when PostgreSQL or redis-server is not installed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devstack.engine import (
    AIRFLOW_DATABASE,
    AIRFLOW_ROLE,
    ENGINE_SERVICES,
    EngineConfig,
    EngineServices,
    find_postgres_bindir,
    find_redis_server,
    postgres_driver,
    reachable_temp_dir,
    redis_ping,
)
from devstack.processes import pid_alive
from devstack.stack import MissingBinaryError, PortInUseError, StackError, port_is_free


def _missing_binaries() -> str | None:
    try:
        find_postgres_bindir()
        find_redis_server()
    except MissingBinaryError as exc:
        return str(exc)
    return None


_MISSING = _missing_binaries()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"engine binaries missing: {_MISSING}")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A temporary state folder PostgreSQL's unprivileged OS user can reach (pytest's tmp_path, under a 0700
    folder of root's, cannot be: see devstack.engine)."""
    path = reachable_temp_dir("modelwatch-engine-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineServices]:
    """PostgreSQL and Redis running for this module's read-only tests."""
    path = reachable_temp_dir("modelwatch-engine-test-")
    running = EngineServices(EngineConfig.free_ports(path))
    # An interrupted session may skip the finalizer; atexit still stops the servers.
    atexit.register(running.stop)
    try:
        t0 = time.monotonic()
        running.start()
        print(f"\nengine start: {time.monotonic() - t0:.2f} s {_rounded(running.timings)}")
        yield running
    finally:
        running.stop()
        atexit.unregister(running.stop)
        shutil.rmtree(path, ignore_errors=True)


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in timings.items()}


def _psql_url(engine: EngineServices, url: str, sql: str) -> subprocess.CompletedProcess[str]:
    """psql (as this user, over TCP) on a libpq URL."""
    psql = str(find_postgres_bindir() / "psql")
    return subprocess.run(
        [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )  # fmt: skip


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_postgres_answers_sql_through_the_url(engine: EngineServices) -> None:
    url = urlsplit(engine.sqlalchemy_url)
    assert url.scheme == f"postgresql+{postgres_driver() or 'psycopg2'}"
    assert (url.hostname, url.port, url.path) == (
        "127.0.0.1",
        engine.config.postgres_port,
        f"/{AIRFLOW_DATABASE}",
    )
    assert url.username == AIRFLOW_ROLE and url.password
    # The same credentials as a libpq URL, over TCP with scram-sha-256 (no driver needed).
    libpq = url._replace(scheme="postgresql").geturl()
    out = _psql_url(engine, libpq, "SELECT current_user, current_database(), inet_server_addr(), 6 * 7")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{AIRFLOW_ROLE}|{AIRFLOW_DATABASE}|127.0.0.1|42"
    # The airflow role owns its database: it may create tables in public (locked down in PostgreSQL 15).
    out = _psql_url(
        engine, libpq, "CREATE TABLE probe (x int); INSERT INTO probe VALUES (1); DROP TABLE probe"
    )
    assert out.returncode == 0, out.stderr
    # TCP really checks the password (trust is for the socket only).
    wrong = url._replace(
        scheme="postgresql", netloc=f"{AIRFLOW_ROLE}:wrong@{url.hostname}:{url.port}"
    ).geturl()
    out = _psql_url(engine, wrong, "SELECT 1")
    assert out.returncode != 0 and "password authentication failed" in out.stderr


def test_sqlalchemy_runs_a_query_through_the_url(engine: EngineServices) -> None:
    # requirements.txt installs apache-airflow[postgres] (psycopg2-binary): a missing driver is a failure
    assert postgres_driver() is not None, "no PostgreSQL driver (psycopg2 or psycopg): run make install"
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    db = sqlalchemy.create_engine(engine.sqlalchemy_url, poolclass=NullPool)
    try:
        with db.begin() as conn:
            row = conn.execute(sqlalchemy.text("SELECT current_user, current_database(), 6 * 7")).one()
    finally:
        db.dispose()
    assert tuple(row) == (AIRFLOW_ROLE, AIRFLOW_DATABASE, 42)


def test_redis_answers_ping(engine: EngineServices) -> None:
    assert redis_ping(engine.config.redis_port)
    assert engine.broker_url == f"redis://127.0.0.1:{engine.config.redis_port}/0"
    # A RESP round trip beyond PING: the broker stores and returns a value.
    with socket.create_connection(("127.0.0.1", engine.config.redis_port), timeout=5) as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        answer = b""
        while answer.count(b"\r\n") < 3:
            answer += sock.recv(64)
    assert answer == b"+OK\r\n$1\r\nv\r\n"


def test_servers_listen_on_loopback_only(engine: EngineServices) -> None:
    for service in ENGINE_SERVICES:
        # 0100007F is 127.0.0.1 in /proc/net/tcp's byte order; no IPv6 or wildcard listener.
        assert _listeners(engine.config.port(service)) == {"0100007F"}, service


def test_stop_leaves_no_process_and_frees_the_ports(state_dir: Path) -> None:
    cfg = EngineConfig.free_ports(state_dir)
    first = EngineServices(cfg)
    atexit.register(first.stop)
    try:
        first.start()
        assert "initdb" in first.timings
        running = first.processes()
        # The postmaster plus its auxiliary processes (checkpointer, WAL writer, ...), each in a session of
        # its own, and Redis.
        assert len(running["postgres"]) > 1 and len(running["redis"]) == 1
        first.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")

        # A fresh object on the same folder (what `down` from another shell is) finds and stops them.
        fresh = EngineServices(
            EngineConfig(state_dir, postgres_port=cfg.postgres_port, redis_port=cfg.redis_port)
        )
        assert fresh.status() == {"postgres": True, "redis": True}
        t0 = time.monotonic()
        assert sorted(fresh.stop()) == sorted(ENGINE_SERVICES)
        print(f"\nengine stop: {time.monotonic() - t0:.2f} s {_rounded(fresh.timings)}")
        assert not [pid for pids in running.values() for pid in pids if pid_alive(pid)]
        assert port_is_free(cfg.postgres_port) and port_is_free(cfg.redis_port)
        assert not cfg.pid_file("postgres").exists() and not cfg.pid_file("redis").exists()
        assert fresh.stop() == [] and first.status() == {"postgres": False, "redis": False}

        # Started again on the same folder: the cluster is reused (no initdb), its data kept.
        t0 = time.monotonic()
        first.start()
        print(f"engine restart: {time.monotonic() - t0:.2f} s {_rounded(first.timings)}")
        assert "initdb" not in first.timings
        assert first.psql("SELECT x FROM kept").strip() == "7"

        # A postmaster killed with SIGKILL may leave children holding its shared memory (they notice its
        # death and exit, unless they are stuck: here one is stopped); stop finds them by binary and data
        # folder and ends them, so the next start on the same data folder succeeds.
        postmaster = first.pid("postgres")
        assert postmaster is not None
        before = first.processes()["postgres"]
        stuck = next(pid for pid in before if pid != postmaster)
        os.kill(stuck, signal.SIGSTOP)
        os.kill(postmaster, signal.SIGKILL)
        assert first.stop(["postgres"]) == ["postgres"]
        assert not [pid for pid in before if pid_alive(pid)]
        # ... and the killed postmaster's SysV shared memory segment is not left behind.
        assert not [
            row
            for row in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
            if row.split()[4] == str(postmaster)
        ]
        assert port_is_free(cfg.postgres_port)
        first.start(["postgres"])
        assert first.psql("SELECT x FROM kept").strip() == "7"
    finally:
        first.stop()
        atexit.unregister(first.stop)
    assert first.processes() == {"postgres": [], "redis": []}


def test_taken_port_is_named_and_nothing_starts(state_dir: Path) -> None:
    cfg = EngineConfig.free_ports(state_dir)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", cfg.redis_port))
        holder.listen()
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{cfg.redis_port}.*MODELWATCH_REDIS_PORT"):
            EngineServices(cfg).start()
    assert EngineServices(cfg).status() == {"postgres": False, "redis": False}
    assert not cfg.postgres_data_dir.exists()


def test_unreachable_state_dir_is_named() -> None:
    """As root, PostgreSQL runs as an unprivileged OS user: a state folder it cannot reach is named before
    anything runs."""
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as another OS user")
    # a short base, not tmp_path: under /tmp/pytest-of-root/pytest-NN/popen-gwN/<test name>/ the socket path
    # passes its 107-byte limit once the session counter has two digits, and that (checked first) is refused
    base = Path(tempfile.mkdtemp(prefix="mw-"))
    try:
        locked = base / "locked"
        locked.mkdir(mode=0o700)
        cfg = EngineConfig.free_ports(locked / "state")
        with pytest.raises(StackError, match=r"cannot reach .*locked.* no search \(x\) permission"):
            EngineServices(cfg).start(["postgres"])
        assert EngineServices(cfg).status() == {"postgres": False, "redis": False}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_missing_postgres_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingBinaryError, match="holds no executable initdb and postgres"):
        find_postgres_bindir(override=tmp_path)
