"""The persistent execution cache: one sqlite3 database shared by every run, keyed by
(sha256 of the program, image id, limits), so re-scoring a run executes nothing. It holds
observations (what each step of a program did), never statuses: those are judged from the
observation with the language's current rules on every read, so a rule change applies
without running anything. `limits` covers everything that decides an observation (the
language's steps and resources, the sandbox's limits, the worker's hash and the
observation's version), so rows of an older worker or schema are simply not found. It also
keeps each execution's Timeout share per (language, image), the history that a jump in the
share is measured against."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

ENV_VAR = "FLORA_EVAL_CACHE"


def default_path() -> Path:
    """$FLORA_EVAL_CACHE, else ~/.cache/flora-eval/exec.sqlite (XDG_CACHE_HOME honoured)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "flora-eval" / "exec.sqlite"


def cache_key(program: str, image_id: str, limits: str) -> str:
    digest = hashlib.sha256(program.encode("utf-8", errors="surrogatepass")).hexdigest()
    return f"{digest}|{image_id}|{limits}"


class ExecCache:
    """Maps a cache key to {"observation": [step outcomes], "timestamp": int}."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS timeout_history (lang TEXT NOT NULL, "
                         "image TEXT NOT NULL, programs INTEGER NOT NULL, timeouts INTEGER NOT NULL, "
                         "at REAL NOT NULL)")

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, result FROM results WHERE key IN ({marks})", chunk)
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put(self, key: str, result: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO results (key, result) VALUES (?, ?)",
                             (key, json.dumps(result)))

    def timeout_shares(self, lang: str, image: str) -> list[float]:
        """The Timeout shares of earlier executions of `lang` on `image`, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT programs, timeouts FROM timeout_history WHERE lang = ? "
                                    "AND image = ? AND programs > 0 ORDER BY at", (lang, image)).fetchall()
        return [timeouts / programs for programs, timeouts in rows]

    def record_timeouts(self, lang: str, image: str, programs: int, timeouts: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO timeout_history (lang, image, programs, timeouts, at) "
                             "VALUES (?, ?, ?, ?, ?)", (lang, image, programs, timeouts, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
