"""A throwaway PostgreSQL server for the tests: Debian's ``initdb``/``pg_ctl``, started by
the tests themselves, listening on 127.0.0.1 on a free port, stopped at the end.

One server per pytest process (each xdist worker has its own), one fresh database per
test. ``initdb`` refuses to run as root: then every PostgreSQL command runs as the
``postgres`` OS user (``runuser``), in a temporary folder that user owns. A missing
PostgreSQL fails loudly (``.ci/run`` installs it); nothing here skips.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "PASSWORD",
    "PostgresServer",
    "USER",
    "closed_port",
    "find_bindir",
]

USER = "bot"
#: A password with characters a URL must escape: the tests prove it is never shown.
PASSWORD = "pg-s3cret/+word"
_QUOTED_PASSWORD = "pg-s3cret%2F%2Bword"


def find_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: ``pg_config --bindir``, Debian's versioned
    folders, or PATH (Debian puts only wrappers there)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout
            candidates.append(Path(out.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise RuntimeError(
        "PostgreSQL's initdb/pg_ctl were not found: install Debian's postgresql package"
        " (apt-get install -y postgresql; .ci/run does it)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (a connection there is refused)."""
    return _free_port()


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder; ``url(db)`` names a database in it."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="bot-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)

    def _command(self, *args: str) -> list[str]:
        if self._as_postgres:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}{done.stdout}"
                f"\n{log[-2000:]}"
            )

    def start(self) -> PostgresServer:
        password_file = self.root / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str) -> None:
        # Durability is not under test here: fsync off keeps CREATE DATABASE quick.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        args = [str(self.bindir / "pg_ctl"), action, "-D", str(self.data), "-w", "-t", "60"]
        if action in ("start", "restart"):
            args += ["-o", options, "-l", str(self.log)]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        self._run(*args, timeout=90.0)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every open connection is cut."""
        self._pg_ctl("restart")

    def pid(self) -> int:
        """The running server's process id (it changes with each restart)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop_only(self) -> None:
        """Stop the server but keep its data (``start_again`` brings it back)."""
        self._pg_ctl("stop")

    def start_again(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._pg_ctl("stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, port: int | None = None) -> str:
        return f"postgresql://{USER}:{_QUOTED_PASSWORD}@127.0.0.1:{port or self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """One statement through ``psql`` (usable where an event loop already runs)."""
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url(database),
                "-c",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self) -> str:
        """A fresh, empty database; its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
