"""Stage claims: several drivers share one store and never run a stage twice.

A driver claims a stage in one write transaction (BEGIN IMMEDIATE): the stage row becomes
`running`, owned by (host, pid, run id), with a heartbeat the driver refreshes while the stage
runs. Another driver that finds a live claim waits for the stage and then uses its result. A
claim is stale when its heartbeat is older than the timeout, or when its owner process on this
host is gone; a stale claim is taken over. Every attempt is a row of `stage_attempts`, and only
the owner of a claim may finish it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ulid import ULID

CLAIM_TIMEOUT = float(os.environ.get("W2S_CLAIM_TIMEOUT", "60"))  # seconds without a heartbeat before a claim is stale
HEARTBEAT_EVERY = min(10.0, CLAIM_TIMEOUT / 4)
PARTIAL_OUTPUTS = ("metrics", "curves", "predictions", "artifacts", "eval_prompts")


def iso(moment: float | None = None) -> str:
    """UTC ISO time with milliseconds (stage timings are compared to see overlap)."""
    return datetime.fromtimestamp(time.time() if moment is None else moment, timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Owner:
    """The driver process holding claims: its host, pid and this run's id."""

    host: str
    pid: int
    run: str

    @classmethod
    def me(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), str(ULID()))

    def json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "run": self.run})


@dataclass(frozen=True)
class Claim:
    status: str  # claimed | done | live
    owner: dict | None = None  # the live owner, when status is live
    attempt: str | None = None  # our attempt id, when claimed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_live(owner: dict | None, heartbeat: float | None, me: Owner, timeout: float = CLAIM_TIMEOUT) -> bool:
    """A claim is live while its heartbeat is fresh and (on this host) its owner process exists."""
    if not owner or heartbeat is None or time.time() - heartbeat > timeout or owner.get("run") == me.run:
        return False
    if owner.get("host") == me.host and (owner.get("pid") == me.pid or not pid_alive(int(owner.get("pid", 0)))):
        return False  # an earlier run in this very process, or a process that is gone
    return True


class Claims:
    """Claim, heartbeat, finish and fail stages on one store connection, as one owner."""

    def __init__(self, store, owner: Owner, executor: str):
        self.store, self.owner, self.executor = store, owner, executor
        self.conn: sqlite3.Connection = store.db.conn

    def _begin(self) -> None:
        if self.conn.in_transaction:
            self.conn.commit()
        self.conn.execute("BEGIN IMMEDIATE")

    def claim(self, key: str, study_id: str, row: dict) -> Claim:
        """Atomically: done, live elsewhere, or ours (partial outputs of earlier attempts dropped)."""
        self._begin()
        try:
            found = self.conn.execute("SELECT id, status, owner_json, heartbeat FROM stages WHERE key = ?", [key]).fetchone()
            if found and found[1] == "done":
                self.conn.commit()
                return Claim("done")
            owner = json.loads(found[2]) if found and found[2] else None
            if found and found[1] == "running" and is_live(owner, found[3], self.owner):
                self.conn.commit()
                return Claim("live", owner)
            for table in PARTIAL_OUTPUTS:
                self.conn.execute(f"DELETE FROM {table} WHERE stage_key = ?", [key])
            values = {**row, "status": "running", "started": iso(), "finished": None, "seconds": None, "error": None,
                      "owner_json": self.owner.json(), "heartbeat": time.time(), "worker_json": None, "executor": self.executor}
            if found:
                sets = ", ".join(f"{k} = ?" for k in values)
                self.conn.execute(f"UPDATE stages SET {sets} WHERE key = ?", [*values.values(), key])
            else:
                values = {"id": str(ULID()), "key": key, "created": iso(), "study_id": study_id, **values}
                self.conn.execute(f"INSERT INTO stages ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", list(values.values()))
            self.conn.execute("UPDATE stage_attempts SET status = 'abandoned' WHERE stage_key = ? AND status = 'running'", [key])
            attempt = str(ULID())
            self.conn.execute(
                "INSERT INTO stage_attempts (id, stage_key, run_id, executor, owner_json, started, status) VALUES (?, ?, ?, ?, ?, ?, 'running')",
                [attempt, key, self.owner.run, self.executor, self.owner.json(), iso()])
            self.conn.commit()
            return Claim("claimed", attempt=attempt)
        except BaseException:
            self.conn.rollback()
            raise

    def started(self, key: str, attempt: str, worker: dict, moment: float) -> None:
        """The worker began the stage: where, and when (its own clock)."""
        with self.conn:
            self.conn.execute("UPDATE stages SET worker_json = ?, started = ? WHERE key = ? AND json_extract(owner_json, '$.run') = ?",
                              [json.dumps(worker), iso(moment), key, self.owner.run])
            self.conn.execute("UPDATE stage_attempts SET worker_json = ?, started = ? WHERE id = ?", [json.dumps(worker), iso(moment), attempt])

    def finish(self, key: str, attempt: str, outcome) -> bool:
        """Write a stage's outputs and mark it done in one transaction; False if our claim was taken over."""
        self._begin()
        try:
            if not self._ours(key):
                self.conn.commit()
                return False
            self.store.write_outputs(key, outcome.result)
            self.conn.execute(
                "UPDATE stages SET status = 'done', started = ?, finished = ?, seconds = ?, output_json = ?, error = NULL, "
                "owner_json = NULL, heartbeat = NULL, worker_json = ? WHERE key = ?",
                [iso(outcome.started), iso(outcome.finished), outcome.seconds, json.dumps(outcome.result.output),
                 json.dumps(outcome.worker), key])
            self._end_attempt(attempt, "done", outcome.seconds, None)
            self.conn.commit()
            return True
        except BaseException:
            self.conn.rollback()
            raise

    def fail(self, key: str, attempt: str, error: str, seconds: float | None, status: str = "failed") -> None:
        """End our claim with an error (status failed) or as interrupted; a later run retries it."""
        with self.conn:
            self.conn.execute(
                "UPDATE stages SET status = ?, finished = ?, seconds = ?, error = ?, owner_json = NULL, heartbeat = NULL "
                "WHERE key = ? AND json_extract(owner_json, '$.run') = ?", [status, iso(), seconds, error, key, self.owner.run])
            self._end_attempt(attempt, status, seconds, error.splitlines()[0] if error else None)

    def _ours(self, key: str) -> bool:
        row = self.conn.execute("SELECT json_extract(owner_json, '$.run') FROM stages WHERE key = ?", [key]).fetchone()
        return bool(row) and row[0] == self.owner.run

    def _end_attempt(self, attempt: str, status: str, seconds: float | None, error: str | None) -> None:
        self.conn.execute("UPDATE stage_attempts SET status = ?, finished = ?, seconds = ?, error = ? WHERE id = ?",
                          [status, iso(), seconds, error, attempt])


class Heartbeat:
    """A thread that refreshes the heartbeat of the stages this driver holds, on its own connection."""

    def __init__(self, path, owner: Owner, every: float = HEARTBEAT_EVERY):
        self.path, self.owner, self.every = path, owner, every
        self.keys: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="w2s-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            while not self._stop.wait(self.every):
                keys = list(self.keys)
                if keys:
                    with conn:
                        conn.execute(f"UPDATE stages SET heartbeat = ? WHERE key IN ({', '.join('?' * len(keys))}) "
                                     "AND json_extract(owner_json, '$.run') = ?", [time.time(), *keys, self.owner.run])
        except sqlite3.Error:  # the store went away under us: the claims go stale, another run takes them over
            pass
        finally:
            conn.close()
