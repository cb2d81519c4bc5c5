"""Content-addressed on-disk cache of embedding vectors (one SQLite file per directory).

Keys are SHA-1 digests over (model fingerprint, kind, content bytes), so a hit is exactly what a recomputation would
give and the cache never needs invalidating; a different model or checkpoint simply misses. One file instead of one
file per image keeps it usable at 10^6 images. SQLite handles concurrent readers and serialises writers.
"""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Iterable, Optional

import numpy as np


def content_key(model_key: str, kind: str, content: bytes) -> str:
    digest = hashlib.sha1()
    for part in (model_key.encode(), kind.encode(), content):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


class EmbeddingCache:
    """``get_many(keys) -> {key: vector}``, ``put_many({key: vector})``; ``directory=None`` disables caching."""

    def __init__(self, directory: Optional[Path | str]):
        self._db: Optional[sqlite3.Connection] = None
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(Path(directory) / "embeddings.sqlite"), timeout=60)
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")
            self._db.commit()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        if self._db is not None:
            for start in range(0, len(keys), 500):  # SQLite limits the number of bound parameters
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, dim, blob in self._db.execute(f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype=np.float32, count=dim).copy()
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, vectors: dict[str, np.ndarray]) -> None:
        if self._db is None or not vectors:
            return
        rows = [(k, int(v.size), np.asarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()]
        self._db.executemany("INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)", rows)
        self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
