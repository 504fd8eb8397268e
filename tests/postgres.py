"""A real PostgreSQL for tests: Debian's server binaries, initdb in a temporary directory, a free loopback
port, run as the ``postgres`` user when the tests run as root; started once per session, stopped after.

tests/conftest.py registers the fixtures once for the whole session, so every test shares one server.
``INCIDENTD_PG_BINDIR`` (written to servers.env by scripts/servers/install.sh) names the bin directory;
otherwise the newest /usr/lib/postgresql/<version>/bin. With ``CI=true`` a server that cannot start fails
the test; elsewhere it skips with the reason.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Server, _tempdir, free_port, server_settings, unavailable

PG_USER = "postgres"
_counter = itertools.count(1)


def pg_bindir() -> str | None:
    configured = server_settings().get("INCIDENTD_PG_BINDIR")
    candidates = [configured] if configured else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))[::-1]
    for c in candidates:
        if c and os.access(os.path.join(c, "initdb"), os.X_OK):
            return c
    return None


class PostgresServer:
    def __init__(self, bindir: str, workdir: Path, user: str | None):
        self.bindir = bindir
        self.workdir = workdir
        self.user = user
        self.port = free_port()
        self.data = workdir / "data"
        self.server: Server | None = None

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def start(self) -> None:
        subprocess.run([f"{self.bindir}/initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, cwd=self.workdir,
                       **self._as_user())
        argv = [f"{self.bindir}/postgres", "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.workdir), "-c", "fsync=off", "-c", "max_connections=200"]
        self.server = Server("postgres", argv, self.workdir, user=self.user, ready=self._ready,
                             ready_timeout=60)
        self.server.start()

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:    # still starting: not listening yet
            return False

    def dsn(self, db: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries not found (apt-get install postgresql, or "
                    "scripts/servers/install.sh)")
    user = PG_USER if os.geteuid() == 0 else None
    workdir = _tempdir("incidentd-pg-", owner=user)
    srv = PostgresServer(bindir, workdir, user)  # type: ignore[arg-type]
    try:
        srv.start()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
        detail = e.stderr.decode(errors="replace")[-2000:] if isinstance(e, subprocess.CalledProcessError) else ""
        srv.stop()
        unavailable(f"PostgreSQL did not start: {e} {detail}")
    yield srv
    srv.stop()


@pytest.fixture()
def pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database()
