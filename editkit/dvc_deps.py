"""The code deps of each DVC stage, computed from the import graph: ``python -m editkit.dvc_deps --check|--write``.

A stage's command (``editkit curate ingest``) runs an entry (:data:`ENTRIES`: a module, or one command function of
a CLI module); the stage's code is every project module that entry imports, transitively. The graph is grimp's
(the one import-linter builds), with imports inside functions counted and ``TYPE_CHECKING`` imports left out, plus
the lazy imports grimp cannot see: a string naming a project module (``"curate.sources.sample:open_sample"`` in a
registry) counts as an import of that module. Importing a module runs its packages' ``__init__.py`` too, so those
count as well, unless empty (the check then fails as soon as one gets content).

The files are listed one by one, except that a package directory is listed whole when the stage imports (nearly)
all of its modules (:data:`NEARLY`). Deps of ``dvc.yaml`` that are not project code (data folders, prompt files,
params paths) are kept as they are, after the code deps.

``--check`` exits 1 naming, per stage, each imported module its deps miss (and any stage whose code deps differ from
the generated ones); ``--write`` rewrites the ``deps:`` lists of ``dvc.yaml`` in place (comments elsewhere kept).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from editkit.yaml_io import parse_yaml

PACKAGES = ("editkit", "curate", "annotate", "benchmarks", "train")
ROOT = Path(__file__).resolve().parents[1]
NEARLY = 0.9  # a package directory is listed whole when the stage imports at least this share of its modules ...
MIN_FILES_NEARLY = 10  # ... and it has this many modules; a smaller one only when the stage imports all of them

# The command prefix of a stage -> the entry it runs. ``{stage}`` is the next word of the command.
ENTRIES = {
    "editkit curate {stage}": "curate.stages.{stage}",
    "editkit annotate merge": "annotate.cli:merge",
    "editkit bench make-fixture": "benchmarks.cli:make_fixture",
    "editkit bench build": "benchmarks.cli:build",
}
# "pkg.module" or "pkg.module:attr" (a bare package name is a word like "train", not an import)
_LAZY = re.compile(r"^(%s)((\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?|:[A-Za-z_]\w*)$" % "|".join(PACKAGES))


@dataclass
class Graph:
    """Project modules, their files and the import edges (grimp's plus the lazy ones)."""

    root: Path
    modules: dict[str, Path]  # module name -> file
    imports: dict[str, set[str]]  # module -> modules it imports directly

    def closure(self, seeds: Iterable[str]) -> set[str]:
        """The seeds, every module they import transitively, and the packages above each one."""
        seen: set[str] = set()
        stack = [s for s in seeds if s in self.modules]
        while stack:
            module = stack.pop()
            if module in seen:
                continue
            seen.add(module)
            parts = module.split(".")
            stack += [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in self.modules]  # run first
            stack += sorted(self.imports.get(module, ()))
        return seen


def build_graph(root: Path = ROOT) -> Graph:
    try:
        import grimp
    except ImportError:  # pragma: no cover - grimp comes with import-linter (the test extra)
        raise SystemExit("editkit.dvc_deps needs grimp (pip install -e '.[test]': it comes with import-linter)") from None
    root = Path(root).resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    modules: dict[str, Path] = {}
    for module in graph.modules:
        base = root.joinpath(*module.split("."))
        path = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
        if path.is_file() and path.stat().st_size:  # an empty __init__.py runs nothing (DVC warns on empty deps)
            modules[module] = path
    imports = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    for module, path in modules.items():  # lazy imports: strings naming a project module
        for text in _strings(path):
            target = text.partition(":")[0]
            if _LAZY.match(text) and target in modules and target != module:
                imports[module].add(target)
    return Graph(root, modules, imports)


def _strings(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and len(n.value) < 200}


def entry_of(cmd: str) -> str | None:
    """The entry (``module`` or ``module:function``) a stage command runs; None when no entry is known."""
    words = cmd.split()
    for prefix, entry in ENTRIES.items():
        pattern = prefix.split()
        if len(words) >= len(pattern) and all(p == "{stage}" or p == w for p, w in zip(pattern, words)):
            stage = words[pattern.index("{stage}")] if "{stage}" in pattern else ""
            return entry.format(stage=stage)
    return None


def entry_seeds(graph: Graph, entry: str) -> set[str]:
    """The modules an entry imports itself: a whole module, or a CLI module's top level + one command function."""
    module, _, function = entry.partition(":")
    if module not in graph.modules:
        raise KeyError(f"entry module {module} not found under {graph.root}")
    if not function:
        return {module}
    tree = ast.parse(graph.modules[module].read_text(encoding="utf-8"))
    nodes = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    if not found:
        raise KeyError(f"entry {entry}: no function {function} in {graph.modules[module]}")
    seeds = set()
    for node in (n for top in (*nodes, *found) for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            seeds.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            seeds.add(node.module)
            seeds.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {s for s in seeds if s in graph.modules and s != module}


def stage_modules(graph: Graph, cmd: str) -> set[str] | None:
    """The project modules a stage's command runs; None when no entry is known for the command. For a
    ``module:function`` entry the module's file counts, but only its top level's and that function's imports."""
    entry = entry_of(cmd)
    if entry is None:
        return None
    module = entry.partition(":")[0]
    packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)} & set(graph.modules)
    return graph.closure(entry_seeds(graph, entry)) | graph.closure([module] if ":" not in entry else []) | packages


def code_deps(graph: Graph, modules: set[str]) -> list[str]:
    """Repo-relative paths covering ``modules``: whole package directories where (nearly) all is imported."""
    files = {graph.modules[m].relative_to(graph.root).as_posix() for m in modules}
    all_files = {p.relative_to(graph.root).as_posix() for p in graph.modules.values()}
    dirs: list[str] = []
    for directory in sorted({f.rsplit("/", 1)[0] for f in all_files if "/" in f}, key=lambda d: (d.count("/"), d)):
        if any(directory.startswith(d + "/") for d in dirs):
            continue
        inside = [f for f in all_files if f.startswith(directory + "/")]
        used = [f for f in inside if f in files]
        if "/" not in directory and len(used) < len(inside):
            continue  # a top-level package is listed whole only when all of it is imported
        if len(used) == len(inside) or (len(inside) >= MIN_FILES_NEARLY and len(used) >= NEARLY * len(inside)):
            dirs.append(directory)
    return sorted(dirs + [f for f in files if not any(f.startswith(d + "/") for d in dirs)])


def is_code(graph: Graph, dep: str) -> bool:
    """A dep that is project code (a module file or a package directory), i.e. one this tool generates."""
    path = graph.root / dep
    if dep.split("/")[0] not in PACKAGES or "$" in dep:
        return False
    if path.suffix == ".py":
        return True
    return path.is_dir() and (path / "__init__.py").is_file()


def covered(dep_paths: Iterable[str], graph: Graph, module: str) -> bool:
    file = graph.modules[module].relative_to(graph.root).as_posix()
    return any(file == d.rstrip("/") or file.startswith(d.rstrip("/") + "/") for d in dep_paths)


def _dep_path(item) -> str:
    return next(iter(item)) if isinstance(item, dict) else str(item)


def check(root: Path = ROOT, graph: Graph | None = None) -> list[str]:
    """One line per problem: a module a stage imports that its deps miss, or code deps that differ from the
    generated ones (stale entries); [] when dvc.yaml is up to date."""
    graph = graph or build_graph(root)
    stages = parse_yaml((Path(root) / "dvc.yaml").read_text(), "dvc.yaml")["stages"]
    problems = []
    for name, stage in stages.items():
        modules = stage_modules(graph, str(stage["cmd"]))
        if modules is None:
            problems.append(f"{name}: no entry known for command {stage['cmd']!r} (editkit.dvc_deps.ENTRIES)")
            continue
        deps = [_dep_path(d) for d in stage.get("deps") or []]
        missing = sorted(m for m in modules if not covered(deps, graph, m))
        if missing:
            problems.append(f"{name}: deps miss {len(missing)} imported module(s): {', '.join(missing)}")
        elif [d for d in deps if is_code(graph, d)] != code_deps(graph, modules):
            problems.append(f"{name}: code deps differ from the import graph's (stale or unordered entries)")
    return problems


def write(root: Path = ROOT, graph: Graph | None = None) -> list[str]:
    """Rewrite the ``deps:`` lists of ``dvc.yaml`` (code deps first, then the other deps with their comments);
    returns the names of the stages whose deps changed."""
    graph = graph or build_graph(root)
    path = Path(root) / "dvc.yaml"
    lines = path.read_text().splitlines(keepends=True)
    stages = parse_yaml("".join(lines), str(path))["stages"]
    changed = []
    out: list[str] = []
    stage, i = None, 0
    while i < len(lines):
        line = lines[i]
        head = re.match(r"^  ([A-Za-z_][\w-]*):", line)
        if head:
            stage = head.group(1)
        deps_line = re.match(r"^(\s+)deps:\s*(#.*)?$", line)
        if not (deps_line and stage in stages):
            out.append(line)
            i += 1
            continue
        indent = len(deps_line.group(1))
        items: list[tuple[str, str]] = []  # (path, the item's line(s))
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].strip().startswith("#")
                                  or len(lines[j]) - len(lines[j].lstrip()) > indent):
            item = re.match(r"^\s+- ([^#\s]+)", lines[j])
            if item:
                items.append((item.group(1).rstrip(":"), lines[j]))
            elif items:
                items[-1] = (items[-1][0], items[-1][1] + lines[j])
            else:
                break
            j += 1
        modules = stage_modules(graph, str(stages[stage]["cmd"]))
        if modules is None:
            raise SystemExit(f"{stage}: no entry known for command {stages[stage]['cmd']!r} (editkit.dvc_deps.ENTRIES)")
        item_indent = " " * (indent + 2)
        new = [f"{item_indent}- {p}\n" for p in code_deps(graph, modules)]
        new += [text for p, text in items if not is_code(graph, p)]
        if new != [text for _, text in items]:
            changed.append(stage)
        out += [line, *new]
        i = j
    path.write_text("".join(out))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m editkit.dvc_deps", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 naming each module a stage's deps miss")
    mode.add_argument("--write", action="store_true", help="rewrite the deps lists of dvc.yaml")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project root (holds dvc.yaml)")
    args = parser.parse_args(argv)
    if args.write:
        changed = write(args.root)
        print(f"dvc.yaml: deps of {', '.join(changed)} rewritten" if changed else "dvc.yaml: deps up to date")
        return 0
    problems = check(args.root)
    for problem in problems:
        print(problem)
    if problems:
        print("run `python -m editkit.dvc_deps --write` to regenerate the deps")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
