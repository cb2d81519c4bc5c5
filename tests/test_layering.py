"""The package layering is a contract: a wrong import fails here (import-linter reads pyproject.toml)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("editkit", "curate", "annotate", "benchmarks", "train")


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports (import-linter) is not installed; it is part of the test extra")
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "broken" in run.stdout and " 0 broken" in run.stdout


def test_production_code_never_imports_the_test_fixtures():
    pattern = re.compile(r"^\s*(from|import)\s+tests(\.|\s|$)", re.M)
    offenders = [str(path.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                 if pattern.search(path.read_text())]
    assert not offenders, f"production modules import tests/: {offenders}"


def test_no_module_imports_itself_through_a_cycle():
    """No module of the packages is reachable from a module it imports (imports inside functions count)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    cycles = sorted({" -> ".join(chain) for module in graph.modules for imported in
                     graph.find_modules_directly_imported_by(module)
                     if (chain := graph.find_shortest_chain(importer=imported, imported=module))})
    assert not cycles, "import cycles (each a chain back to its first module's importer):\n" + "\n".join(cycles)


def test_the_umbrella_cli_imports_no_package_until_a_group_runs():
    code = ("import sys, editkit.cli; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {PACKAGES[1:]!r}))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout


def test_the_umbrella_cli_lists_every_group_with_its_help():
    from typer.testing import CliRunner

    from editkit.cli import GROUPS, app
    from editkit.registry import import_dotted

    runner = CliRunner()
    listing = runner.invoke(app, ["--help"], terminal_width=200)
    assert listing.exit_code == 0, listing.output
    for name, target in GROUPS.items():
        first_words = " ".join(import_dotted(target).info.help.split()[:3])
        assert name in listing.output and first_words in " ".join(listing.output.split()), (name, listing.output)
    assert "summary" in listing.output
    group_help = runner.invoke(app, ["bench", "build", "--help"], terminal_width=200)
    assert group_help.exit_code == 0 and "--bench" in group_help.output, group_help.output
    typo = runner.invoke(app, ["curat"])
    assert typo.exit_code != 0 and "curate" in typo.output
