"""The miniature ablation's base editor as a shipped artifact: the pretrained pipeline with a SHA-256 of every file.

Pretraining (:mod:`train.experiment.pretrain`) amplifies last-bit float differences between CPUs into a different
model, so an ablation that pretrains its own base editor measures a different starting point on every machine. The
ablation therefore starts from a fixed, committed base editor and checks it before use: every seed and arm of every
run starts from byte-identical weights, and the spread over seeds covers everything that still varies.

``python -m train.experiment.base_editor ship --from runs/ablation/base --to results/ablation/base_editor`` copies
a pretrained base editor's ``model/`` there and writes ``SHA256SUMS`` (one ``<sha256>  <path>`` line per file) and
``base_editor.json`` (its pretraining config, hash, rows and timings); ``verify`` checks a shipped one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from editkit.errors import UserError

MANIFEST = "SHA256SUMS"


class BaseEditorError(UserError):
    """The shipped base editor is missing or differs from its checksums."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(model_dir: Path) -> dict[str, str]:
    """``{path relative to the artifact: sha256}`` for every file under ``model_dir``, sorted."""
    root = model_dir.parent
    return {str(p.relative_to(root)): file_digest(p) for p in sorted(model_dir.rglob("*")) if p.is_file()}


def ship(pretrained: Path, dest: Path) -> Path:
    """Copy ``pretrained/model`` to ``dest/model`` and write ``dest/SHA256SUMS`` and ``dest/base_editor.json``."""
    from editkit.store import write_json

    report = json.loads((pretrained / "pretrain.json").read_text())
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(pretrained / "model", dest / "model")
    sums = checksums(dest / "model")
    (dest / MANIFEST).write_text("".join(f"{digest}  {path}\n" for path, digest in sums.items()))
    write_json(dest / "base_editor.json", {key: report[key] for key in
                                           ("config_hash", "config", "rows", "seconds", "loss_curves")
                                           if key in report})
    return dest


def verify(dest: Path) -> Path:
    """``dest/model`` after checking every file against ``dest/SHA256SUMS`` (and that no file is missing or extra)."""
    manifest = dest / MANIFEST
    if not manifest.exists():
        raise BaseEditorError(f"no {MANIFEST} in {dest}: not a shipped base editor")
    expected = {}
    for line in manifest.read_text().splitlines():
        digest, _, path = line.partition("  ")
        expected[path] = digest
    found = checksums(dest / "model") if (dest / "model").is_dir() else {}
    bad = sorted(p for p in expected.keys() | found.keys() if expected.get(p) != found.get(p))
    if bad:
        raise BaseEditorError(f"the base editor in {dest} differs from {MANIFEST} ({len(bad)} file(s), e.g. {bad[0]})")
    return dest / "model"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ship_parser = sub.add_parser("ship", help="copy a pretrained base editor and write its checksums")
    ship_parser.add_argument("--from", dest="source", default="runs/ablation/base")
    ship_parser.add_argument("--to", dest="dest", default="results/ablation/base_editor")
    verify_parser = sub.add_parser("verify", help="check a shipped base editor against its checksums")
    verify_parser.add_argument("dest", nargs="?", default="results/ablation/base_editor")
    args = parser.parse_args(argv)
    if args.command == "ship":
        print(f"shipped {ship(Path(args.source), Path(args.dest))}")
    else:
        print(f"verified {verify(Path(args.dest))}")


if __name__ == "__main__":
    main()
