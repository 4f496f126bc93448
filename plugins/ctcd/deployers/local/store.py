"""The local deployer's registry of model servers: one SQLite file under ``servers_dir``.

SQLite (WAL, busy timeout) makes every write atomic across processes; the deployer adds a
file lock per server around multi-step operations. The registry stores *desired* state
(which version a server should run, whether it should be running) and the process identity
it last started; whether a server *is* running is always observed, never read from here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctcd.deployers.base import DeploymentConfig, DeploymentEvent
from ctcd.errors import ModelServerNotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    host          TEXT NOT NULL,
    port          INTEGER NOT NULL UNIQUE,
    desired_state TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    pid           INTEGER,
    pid_started   REAL,
    admin_token   TEXT NOT NULL,
    config        TEXT NOT NULL,
    strategy      TEXT,
    deployed_at   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_error    TEXT
);
CREATE TABLE IF NOT EXISTS deployments (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id    TEXT NOT NULL,
    config       TEXT NOT NULL,
    strategy     TEXT NOT NULL,
    outcome      TEXT NOT NULL
                 CHECK (outcome IN ('succeeded', 'unchanged', 'failed', 'pending', 'held')),
    message      TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    seconds_to_serving REAL
);
CREATE INDEX IF NOT EXISTS deployments_by_server ON deployments (server_id, seq);
"""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ServerRecord:
    id: str
    name: str
    host: str
    port: int
    desired_state: str
    pid: int | None
    pid_started: float | None
    admin_token: str
    config: DeploymentConfig
    strategy: str | None
    deployed_at: str | None
    created_at: str
    updated_at: str
    last_error: str | None

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ServerRecord:
        data: dict[str, Any] = dict(row)
        data["config"] = DeploymentConfig.from_dict(json.loads(data["config"]))
        return cls(**data)


class ServerStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            _use_wal(db)
            db.executescript(SCHEMA)
            _allow_outcomes(db)
            _add_notes(db)
        path.chmod(0o600)  # holds admin tokens

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    # -- queries (pure) --------------------------------------------------------------------

    def all(self) -> list[ServerRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM servers ORDER BY created_at").fetchall()
        return [ServerRecord.from_row(r) for r in rows]

    def by_name(self, name: str) -> ServerRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM servers WHERE name = ?", (name,)).fetchone()
        return ServerRecord.from_row(row) if row else None

    def resolve(self, key: str) -> ServerRecord:
        """A server by id, unique id prefix (4+ characters) or server name."""
        with self._connect() as db:
            query = "SELECT * FROM servers WHERE id = ? OR name = ?"
            row = db.execute(query, (key, key)).fetchone()
            if row is None and len(key) >= 4:
                rows = db.execute(
                    "SELECT * FROM servers WHERE id LIKE ? ESCAPE '\\'",
                    (key.replace("%", "\\%").replace("_", "\\_") + "%",),
                ).fetchall()
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise ModelServerNotFound(f"service id or name {key!r}")
        return ServerRecord.from_row(row)

    def used_ports(self) -> set[int]:
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT port FROM servers")}

    def history(self, server_id: str, limit: int = 20) -> list[DeploymentEvent]:
        """The server's deployments, newest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT config, strategy, outcome, message, started_at, finished_at,"
                " seconds_to_serving, notes FROM deployments WHERE server_id = ?"
                " ORDER BY seq DESC LIMIT ?",
                (server_id, limit),
            ).fetchall()
        out = []
        for row in rows:
            data: dict[str, Any] = dict(row)
            data["config"] = DeploymentConfig.from_dict(json.loads(data["config"]))
            data["notes"] = tuple(json.loads(data["notes"] or "[]"))
            out.append(DeploymentEvent(**data))
        return out

    # -- writes ----------------------------------------------------------------------------

    def insert(
        self, *, id: str, name: str, host: str, port: int, admin_token: str,
        config: DeploymentConfig,
    ) -> ServerRecord:
        now = utcnow()
        with self._connect() as db:
            db.execute(
                "INSERT INTO servers (id, name, host, port, desired_state, admin_token, config,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (id, name, host, port, admin_token, json.dumps(config.to_dict()), now, now),
            )
        return self.resolve(id)

    def update(self, server_id: str, **values: Any) -> ServerRecord:
        if "config" in values:
            values["config"] = json.dumps(values["config"].to_dict())
        values["updated_at"] = utcnow()
        columns = ", ".join(f"{k} = ?" for k in values)
        with self._connect() as db:
            db.execute(f"UPDATE servers SET {columns} WHERE id = ?", (*values.values(), server_id))
        return self.resolve(server_id)

    def delete(self, server_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM servers WHERE id = ?", (server_id,))

    def record_deployment(
        self, server_id: str, config: DeploymentConfig, *, strategy: str, outcome: str,
        started_at: str, message: str | None = None, seconds_to_serving: float | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """Append a deployment. ``pending``: launched, readiness not yet observed (its
        ``finished_at`` is the launch time until :meth:`settle_pending` completes it).
        ``notes``: the strategy's analysis, step by step."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO deployments (server_id, config, strategy, outcome, message,"
                " started_at, finished_at, seconds_to_serving, notes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (server_id, json.dumps(config.to_dict()), strategy, outcome, message,
                 started_at, utcnow(), seconds_to_serving, json.dumps(list(notes))),
            )

    def settle_pending(self, server_id: str, outcome: str, message: str | None = None) -> int:
        """Complete the server's ``pending`` deployments as ``outcome`` (``succeeded`` when
        readiness was observed, ``failed`` when the process ended first); returns how many.
        ``seconds_to_serving`` is the time from the start to the observation."""
        with self._connect() as db:
            if db.execute("SELECT 1 FROM deployments WHERE server_id = ? AND outcome = 'pending'"
                          " LIMIT 1", (server_id,)).fetchone() is None:
                return 0  # the usual case: a read, no write lock
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT seq, started_at FROM deployments WHERE server_id = ? AND"
                              " outcome = 'pending'", (server_id,)).fetchall()
            now = datetime.now(UTC)
            for seq, started_at in rows:
                seconds = (now - datetime.fromisoformat(started_at)).total_seconds()
                db.execute(
                    "UPDATE deployments SET outcome = ?, message = ?, finished_at = ?,"
                    " seconds_to_serving = ? WHERE seq = ?",
                    (outcome, message, now.isoformat(timespec="milliseconds"),
                     seconds if outcome == "succeeded" else None, seq),
                )
            db.execute("COMMIT")
            return len(rows)


def _allow_outcomes(db: sqlite3.Connection) -> None:
    """Registries made before an outcome existed (``pending``, then ``held``): rebuild the
    deployments table with the new CHECK constraint, keeping its rows and columns (SQLite
    cannot alter a constraint)."""
    def current() -> bool:
        row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'deployments'").fetchone()
        return "'held'" in row[0]

    if current():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if not current():  # another process may have migrated it meanwhile
            db.execute("ALTER TABLE deployments RENAME TO deployments_before_outcomes")
            create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS deployments"):]
            db.execute(create[:create.index(";")])
            columns = [row[1] for row in
                       db.execute("PRAGMA table_info(deployments_before_outcomes)")]
            if "notes" in columns:
                db.execute("ALTER TABLE deployments ADD COLUMN notes TEXT")
            names = ", ".join(columns)
            db.execute(f"INSERT INTO deployments ({names}) SELECT {names} "
                       "FROM deployments_before_outcomes")
            db.execute("DROP TABLE deployments_before_outcomes")
            db.execute("CREATE INDEX IF NOT EXISTS deployments_by_server"
                       " ON deployments (server_id, seq)")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _use_wal(db: sqlite3.Connection, attempts: int = 100) -> None:
    """Put the file in WAL mode, once: the mode is stored in the file, so later connections
    need not ask. Switching takes an exclusive lock that SQLite does not wait for through
    the busy timeout, so processes that open a new registry at the same moment retry."""
    for attempt in range(attempts):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _add_notes(db: sqlite3.Connection) -> None:
    """Registries made before a deployment kept its strategy's notes: add the column."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(deployments)")}
    if "notes" not in columns:
        try:
            db.execute("ALTER TABLE deployments ADD COLUMN notes TEXT")
        except sqlite3.OperationalError as err:  # another process added it meanwhile
            if "duplicate column" not in str(err):
                raise
