"""On-disk response cache: SQLite keyed by (backend, model, prompt version + content hash, request incl. images).

Every successful response is committed as soon as it arrives, so a killed run resumes where it stopped and
`dvc repro` never re-queries what it already has. SQLite in WAL mode serialises writers across threads and
processes (several workers may share one cache). Only the request fingerprint's hash and the response are stored:
never headers, never the API key. Failed responses are not cached (a rerun retries them).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from editkit.mllm.messages import Request, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(backend: str, model: str, request: Request) -> str:
    payload = {"backend": backend, "model": model, **request.fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, directory: Path | str):
        self.path = Path(directory) / "responses.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
        self._db.execute(SCHEMA)

    def get(self, key: str) -> Response | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else Response.from_json(json.loads(row[0]), cached=True)

    def put(self, key: str, backend: str, model: str, request: Request, response: Response) -> None:
        if not response.ok:
            return
        text = json.dumps(response.to_json(), ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                             (key, backend, model, request.prompt_version, text, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
