"""The `fingerprint` stage: what the configured source reads from outside the repository, as a small JSON manifest.

DVC runs this stage on every ``dvc repro`` (``always_changed: true``); ``ingest`` depends on its output, so ingest
and everything after it re-run exactly when the data a source reads has changed, and a run over unchanged data is a
no-op. The manifest is deterministic (no timestamps, no absolute paths of the cache): the same bytes give the same
file.

What is fingerprinted, per ``ingest.source``:

* ``sample``: nothing outside the code and ``params.yaml`` (the manifest names the source only);
* ``folder``: every file under ``ingest.folder.path`` (``pairs.jsonl`` and the images), and with
  ``allow_outside_root: true`` the files ``pairs.jsonl`` names outside it;
* ``hf`` / ``preset``: a local path (a folder, or one data file) is fingerprinted like a folder; a hub id is recorded
  with the revisions of its local snapshot in the Hugging Face hub cache (``refs/*``: a new download of another
  revision changes them), or as not cached.

Cheap on large folders: a file is hashed (SHA-256) only when its size or modification time differs from the
previous run's, kept in a cache (``--cache``, default ``data/cache/fingerprint.json``, not tracked by DVC); otherwise
its previous hash is reused. The manifest holds per root the number of files, their total size and one digest over
the sorted (path, size, hash) list; the per-file list stays in the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import typer

STAGE = "fingerprint"
FORMAT = 1  # the manifest's layout version
CHUNK = 1 << 20
DEFAULT_CACHE = Path("data/cache/fingerprint.json")


# ---------------------------------------------------------------- hashing with a cache
def _walk(root: Path) -> Iterator[Path]:
    """Every file under ``root`` (sorted, symlinked files followed, hidden VCS folders skipped)."""
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".dvc", "__pycache__"))
        for name in sorted(files):
            yield Path(directory) / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """Absolute path -> ``[size, mtime_ns, sha256]`` of the previous run; :meth:`hash` re-reads a file only when its
    size or mtime changed. Counts what it hashed and reused (for the metrics and the tests)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        if not isinstance(self.entries, dict):
            self.entries = {}
        self.used: dict[str, list] = {}
        self.hashed = self.reused = 0

    def hash(self, path: Path) -> tuple[int, str]:
        stat = path.stat()
        key = str(path.resolve())
        known = self.entries.get(key)
        if isinstance(known, list) and len(known) == 3 and known[:2] == [stat.st_size, stat.st_mtime_ns]:
            self.reused += 1
            sha = known[2]
        else:
            self.hashed += 1
            sha = _sha256(path)
        self.used[key] = [stat.st_size, stat.st_mtime_ns, sha]
        return stat.st_size, sha

    def save(self) -> None:
        """Keep the entries of this run (files no longer read are forgotten); written atomically."""
        from editkit.atomic import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.used, sort_keys=True) + "\n")


def fingerprint_path(path: Path, cache: HashCache) -> dict[str, Any]:
    """``{"files", "bytes", "digest"}`` of a file or of every file under a folder (paths relative to it)."""
    path = Path(path)
    if not path.exists():
        return {"missing": True}
    files = [path] if path.is_file() else list(_walk(path))
    digest = hashlib.sha256()
    total = 0
    for file in files:
        size, sha = cache.hash(file)
        relative = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{relative}\t{size}\t{sha}\n".encode("utf-8", "surrogateescape"))
        total += size
    return {"files": len(files), "bytes": total, "digest": digest.hexdigest()}


# ---------------------------------------------------------------- hub snapshots
def _hub_cache() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit)
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def hub_snapshot(repo_id: str) -> dict[str, Any]:
    """The revisions of a hub dataset's local snapshot (``refs/<name>`` -> commit), or ``cached: false``."""
    folder = _hub_cache() / f"datasets--{repo_id.replace('/', '--')}"
    refs = folder / "refs"
    revisions = {}
    if refs.is_dir():
        for ref in sorted(p for p in refs.rglob("*") if p.is_file()):
            revisions[ref.relative_to(refs).as_posix()] = ref.read_text(encoding="utf-8", errors="replace").strip()
    return {"hub_id": repo_id, "cached": bool(revisions), "revisions": revisions}


# ---------------------------------------------------------------- what each source reads
def source_inputs(ingest: Any) -> dict[str, str]:
    """``{"folder" | "path" | "hub_id": value}`` of what the configured source reads (empty for the sample)."""
    source = ingest.source
    if source == "folder":
        return {"folder": ingest.folder.path}
    if source == "hf":
        return _path_or_hub(ingest.hf.path)
    if source == "preset":
        path = ingest.preset.path
        if not path and ingest.preset.name:
            from curate.sources.presets import get_preset

            try:
                path = get_preset(ingest.preset.name).hub_id
            except (KeyError, ValueError):  # ingest reports an unknown preset itself
                path = ""
        return _path_or_hub(path)
    return {}


def _path_or_hub(path: str) -> dict[str, str]:
    if not path:
        return {}
    return {"path": path} if Path(path).expanduser().exists() else {"hub_id": path}


def outside_files(folder: Path, pairs_file: str) -> list[Path]:
    """Files ``pairs.jsonl`` names outside ``folder`` (read only with ``allow_outside_root: true``), sorted."""
    root, found = folder.resolve(), set()
    try:
        lines = (folder / pairs_file).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # ingest rejects the line itself
        for key in ("source", "edited", "mask"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and value:
                path = (folder / value).resolve()
                if not path.is_relative_to(root) and path.is_file():
                    found.add(path)
    return sorted(found)


def manifest(ingest: Any, cache: HashCache) -> dict[str, Any]:
    inputs = source_inputs(ingest)
    out: dict[str, Any] = {"format": FORMAT, "source": ingest.source, "inputs": []}
    for kind, value in sorted(inputs.items()):
        if kind == "hub_id":
            out["inputs"].append(hub_snapshot(value))
        else:
            out["inputs"].append({kind: value, **fingerprint_path(Path(value).expanduser(), cache)})
    folder = getattr(ingest, "folder", None)
    if ingest.source == "folder" and getattr(folder, "allow_outside_root", False) and folder.path:
        files = outside_files(Path(folder.path).expanduser(), folder.pairs_file)
        digest, total = hashlib.sha256(), 0
        for file in files:
            size, sha = cache.hash(file)
            digest.update(f"{file}\t{size}\t{sha}\n".encode("utf-8", "surrogateescape"))
            total += size
        out["inputs"].append({"outside_folder": True, "files": len(files), "bytes": total,
                              "digest": digest.hexdigest()})
    return out


def run(ingest: Any, out_file: Path, cache_file: Path | str = DEFAULT_CACHE) -> dict[str, Any]:
    """Write the manifest (only when its content changed, so its mtime stays put too) and return run metrics."""
    from editkit import store

    started = time.perf_counter()
    cache = HashCache(cache_file)
    document = manifest(ingest, cache)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    out_file = Path(out_file)
    if not out_file.is_file() or out_file.read_text() != text:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        store.atomic_write_text(out_file, text)
    cache.save()
    return {"files": sum(i.get("files", 0) for i in document["inputs"]), "hashed": cache.hashed,
            "reused": cache.reused, "seconds": round(time.perf_counter() - started, 3)}


def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (section ingest)"),
    out: Path = typer.Option(Path("data/fingerprint/inputs.json"), "--out", help="the manifest ingest depends on"),
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="size, mtime and hash of each file of the last run"),
) -> None:
    """Fingerprint what the configured source reads (folder, data files, hub snapshot) into a small JSON manifest;
    ingest depends on it, so changed data re-runs ingest and unchanged data does not."""
    from curate.stages.ingest import STAGE as INGEST, IngestParams
    from editkit import config

    ingest = config.load_section(IngestParams, INGEST, params_file)
    result = run(ingest, out, cache)
    typer.echo(f"fingerprint: {result['files']} file(s), {result['hashed']} hashed, {result['reused']} unchanged "
               f"-> {out}")
