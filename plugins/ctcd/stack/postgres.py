"""A private PostgreSQL cluster for the scale profile: ``initdb`` into a directory, then the
``postgres`` server in the foreground on a loopback port, as an unprivileged user.

PostgreSQL refuses to run as root. When this process is root, the cluster belongs to the
``postgres`` system user (created by Debian's ``postgresql`` package) and its directory is
made outside the stack's home (which may sit under a root-only directory such as pytest's
temporary tree); ``setpriv`` drops privileges and then execs, so the recorded pid is the
server's own.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

SYSTEM_USER = "postgres"  # the unprivileged owner when running as root
SUPERUSER = "ctcd"  # the cluster's superuser, used by Airflow and MLflow


class PostgresError(RuntimeError):
    pass


def bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` are: ``CTCD_PG_BIN``, ``pg_config``, or Debian's
    newest ``/usr/lib/postgresql/<major>/bin``."""
    if os.environ.get("CTCD_PG_BIN"):
        return Path(os.environ["CTCD_PG_BIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and (Path(found.stdout.strip()) / "initdb").exists():
            return Path(found.stdout.strip())
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]),
    )
    if not candidates:
        raise PostgresError(
            "PostgreSQL server binaries not found: install them (Debian: apt-get install "
            "postgresql) or point CTCD_PG_BIN at the directory holding initdb and postgres"
        )
    return Path(candidates[-1]).parent


class PostgresCluster:
    """One cluster: its directory, port and superuser password (generated at ``init``)."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home.resolve()
        self.port = port
        if os.geteuid() == 0:
            digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
            self.root = Path(tempfile.gettempdir()) / f"ctcd-postgres-{digest}"
        else:
            self.root = self.home / "postgres"
        self.data_dir = self.root / "data"

    # -- identity ------------------------------------------------------------------------------
    def _prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError as err:
            raise PostgresError(
                f"running as root, and there is no {SYSTEM_USER!r} user to own the cluster "
                "(PostgreSQL refuses root): install Debian's postgresql package or run as a "
                "normal user"
            ) from err
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return [setpriv, f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups", "--"]

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    # -- lifecycle -----------------------------------------------------------------------------
    def init(self) -> None:
        """Create the cluster once (idempotent): scram-sha-256 on loopback, no Unix socket."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        password_file = self.root / "password"
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SYSTEM_USER)
            for path in (self.root, password_file):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        result = subprocess.run(
            [
                *self._prefix(), str(bin_dir() / "initdb"),
                "--pgdata", str(self.data_dir), "--username", SUPERUSER,
                "--pwfile", str(password_file), "--auth", "scram-sha-256",
                "--encoding", "UTF8", "--no-locale", "--no-instructions",
            ],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"initdb failed in {self.data_dir}:\n{result.stdout}{result.stderr}"
            )

    def server_argv(self) -> list[str]:
        return [
            *self._prefix(), str(bin_dir() / "postgres"),
            "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "fsync=off", "-c", "shared_buffers=64MB",
        ]

    def wait_ready(self, *, timeout: float, pid: int | None = None) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        url = self.url("postgres", driver="postgresql")
        while True:
            try:
                psycopg2.connect(url, connect_timeout=2).close()
                return
            except psycopg2.OperationalError as err:
                if pid is not None and not psutil.pid_exists(pid):
                    raise PostgresError(f"postgres (pid {pid}) exited: {err}") from err
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"PostgreSQL on 127.0.0.1:{self.port} not ready after {timeout:.0f}s: {err}"
                    ) from err
            time.sleep(0.5)

    def create_database(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        import psycopg2

        conn = psycopg2.connect(self.url("postgres", driver="postgresql"))
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    @staticmethod
    def stop(pid: int, *, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except psutil.TimeoutExpired:
                proc.kill()

    def remove(self) -> None:
        """Delete the cluster's directory (the server must be stopped)."""
        shutil.rmtree(self.root, ignore_errors=True)
