"""Executable documentation: every command the README and docs/ show either runs here, on the built-in sample, or
carries a visible marker saying why it cannot (docs/development.md, "Commands in the manual").

A command is a line of a fenced or indented code block, or an inline code span, that starts with `editkit`, `python`,
`make`, `dvc`, `accelerate` or `torchrun` (also as `.venv/bin/<tool>`). One test per block: `test_docs_command[<file>-<n>]`,
<n> counting the file's blocks that hold a command, in document order (inline spans are blocks of their own).

* Unmarked commands run in a temporary copy of the repository (the tracked files, a fresh git repository, the
  installed `.venv` shared), after `make demo` has built the sample there once per test run. The copy's
  `params.yaml` asks for a smaller sample (`sample.n` = SAMPLE_N) so the whole file stays within a few minutes on
  two CPU cores. Commands run in document order, each within a time budget; an identical command runs once.
* Marked commands end with `# needs: <markers>` inside code, or are followed by `(needs: <markers>)` after an inline
  span. Markers come from MARKERS. A `long` command runs its smoke variant from SMOKE instead, unless it is one of
  CI_RUNS (CI runs those anyway). Every marked `editkit ...` command still has its flags parsed against the real
  command line (typer/click, in process, nothing invoked): an unknown command or option fails.
* A span with placeholders (`<stage>`, `RUN`, `gedit|imgedit`, `[...]`) is a form, not a command: it is not run, and
  an `editkit` form is parsed with each placeholder standing for one value.

Nothing here reaches beyond 127.0.0.1: hub access is switched off and HTTP(S) proxies point at a closed local port.
Also here: the durations the docs state come from recorded runs (test_durations_cite_a_recorded_run).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKERS = {"gpu", "weights", "hub download", "long"}
# `long` commands CI runs as they are: .ci/run runs `make test`, which is `python -m pytest` in .venv (and the suite
# runs `make demo`'s pipeline, here too).
CI_RUNS = {"make demo", "make test", "python -m pytest"}
# `long` command (as written, comment dropped, whitespace collapsed) -> the smoke variant that runs in its place.
SMOKE = {
    "make test-fast": 'PYTEST_ADDOPTS="-p no:cacheprovider tests/test_config_loader.py" make test-fast',
    "make ablation": "editkit train ablation --config train/configs/ablation.yaml --smoke --out runs/ablation_smoke "
                     "--work-dir runs/ablation_smoke_work",
    "editkit train ablation --config train/configs/ablation.yaml":
        "editkit train ablation --config train/configs/ablation.yaml --smoke --out runs/ablation_smoke "
        "--work-dir runs/ablation_smoke_work",
    "editkit train pretrain --config train/configs/ablation_base.yaml":
        "editkit train pretrain --config train/configs/ablation_base.yaml output_dir=runs/pretrain_smoke "
        "data.limit=24 data.heldout=3 data.validation=2 data.rl=3 data.edit_types=[] vae.steps=2 vae.batch_size=8 "
        "transformer.steps=2 transformer.batch_size=4 eval_steps=2",
    "editkit train run --config train/configs/tiny_kontext.yaml":
        "editkit train run --config train/configs/tiny_kontext.yaml train.max_steps=1 output_dir=runs/tiny_smoke",
    ".venv/bin/editkit train run --config train/configs/tiny_kontext.yaml":
        "editkit train run --config train/configs/tiny_kontext.yaml train.max_steps=1 output_dir=runs/tiny_smoke",
    "accelerate launch --multi_gpu --num_processes 2 -m train --config train/configs/tiny_kontext.yaml":
        "accelerate launch --multi_gpu --num_processes 2 -m train --config train/configs/tiny_kontext.yaml "
        "train.max_steps=1 output_dir=runs/tiny_ddp_smoke",
    "torchrun --nproc-per-node 2 -m train --config train/configs/tiny_kontext.yaml train.parallelism=fsdp2":
        "torchrun --nproc-per-node 2 -m train --config train/configs/tiny_kontext.yaml train.parallelism=fsdp2 "
        "train.max_steps=1 output_dir=runs/tiny_fsdp_smoke",
    "editkit bench make-fixture --n 6 --out data/bench_fixture6 && editkit bench build --bench gedit --path "
    "data/bench_fixture6/gedit --masks data/bench_fixture6/gedit/reference_masks --out data/bench/gedit6 && "
    "editkit bench evaluate --bench gedit --data data/bench/gedit6 --model runs/tiny_kontext_model --steps 2 "
    "--resolution 64":
        "editkit bench make-fixture --n 2 --out data/bench_fixture2 && editkit bench build --bench gedit --path "
        "data/bench_fixture2/gedit --masks data/bench_fixture2/gedit/reference_masks --out data/bench/gedit2 && "
        "editkit bench evaluate --bench gedit --data data/bench/gedit2 --model runs/tiny_kontext_model --steps 1 "
        "--resolution 32",
    ".venv/bin/python perf/ingest_stream.py":
        ".venv/bin/python perf/ingest_stream.py --small 40 --large 80 --compare-hf 0 --out runs/perf/ingest.json",
    ".venv/bin/python perf/grounded_masks.py [--threads N]":
        ".venv/bin/python perf/grounded_masks.py --images 2 --size 64 --batch-sizes 2 --repeats 1 "
        "--out runs/perf/grounded.json",
    ".venv/bin/python perf/mllm_client.py":
        ".venv/bin/python perf/mllm_client.py --requests 8 --delay-ms 1 --workers 1 4 --out runs/perf/mllm.json",
    ".venv/bin/python perf/rle_codec.py": ".venv/bin/python perf/rle_codec.py --size 64 --repeats 1 --out runs/perf/rle.json",
}
# placeholder -> the value a form is parsed with (any other placeholder stands for "x")
FILL = {"<stage>": "ingest", "<bench>": "gedit"}
# Spans that name a launcher or entry point without its arguments; they run as `<name> --help`.
NAMES = {"accelerate launch", "python -m train", "accelerate launch -m train", "torchrun -m train", "editkit train run"}
# Commands that must not touch the shared copy: they run in a throwaway copy of it.
DESTRUCTIVE = {"make clean-data"}

SAMPLE_N = 24          # pairs in the copy's sample (4 per edit type)
BUDGET_S = 240         # per command unless BUDGETS says otherwise
BUDGETS = {"make demo": 600}

TOOL = r"(?:\.venv/bin/)?(?:editkit|python3?|make|dvc|accelerate|torchrun)"
COMMAND = re.compile(rf"^{TOOL}(?=\s|$)")
CODE_MARKER = re.compile(r"needs:\s*([a-z][a-z ,]*?)\s*$")
SPAN_MARKER = re.compile(r"\s*\(needs:\s*([a-z ,]*?)\s*[;)]")
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|\[|\]|\||(?<![\w.=/-])[A-Z][A-Z_]{1,}(?![\w.=/-])")


@dataclass
class Command:
    text: str                       # the command as written, comment dropped, whitespace collapsed
    markers: list[str]
    line: int

    @property
    def is_form(self) -> bool:
        return bool(PLACEHOLDER.search(self.text)) and self.text not in SMOKE


@dataclass
class Block:
    file: str
    index: int
    kind: str                       # fenced | indented | inline
    line: int
    commands: list[Command] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.file}-{self.index}"


def _split_comment(line: str) -> tuple[str, str]:
    """Code and trailing `# comment` of a shell line (a `#` inside quotes or a word is not a comment)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1:]
    return line, ""


def _code_commands(lines: list[tuple[int, str]]) -> list[Command]:
    commands, pending, comments, first, last = [], "", [], 0, -1
    for number, raw in lines:
        code, comment = _split_comment(raw)
        if not pending and not code.strip() and raw[:1].isspace() and commands and commands[-1].line == last:
            found = CODE_MARKER.search(comment.strip())        # an indented comment line continues the command's
            if found:                                          # own comment: its marker belongs to the command
                commands[-1].markers = [m.strip() for m in found.group(1).split(",") if m.strip()]
            continue
        if not pending:
            first = number
        comments.append(comment)
        code = code.rstrip()
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        text = " ".join((pending + code).split())
        pending = ""
        text = text[2:] if text.startswith("$ ") else text
        if COMMAND.match(text):
            markers: list[str] = []
            for note in comments:
                found = CODE_MARKER.search(note.strip())
                if found:
                    markers = [m.strip() for m in found.group(1).split(",") if m.strip()]
            commands.append(Command(text, markers, first))
            last = first
        else:
            last = -1
        comments = []
    return commands


def parse_blocks(path: Path) -> list[Block]:
    name = path.name
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks: list[Block] = []
    fence, fenced, prose = None, [], []        # prose: (line number, text) outside code blocks
    previous_blank, previous_prose = True, ""
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if fence is None and re.match(r"^\s*(```|~~~)", line):
            fence, fenced, start = stripped[:3], [], i + 1
        elif fence is not None and stripped.startswith(fence):
            commands = _code_commands(fenced)
            if commands:
                blocks.append(Block(name, 0, "fenced", start, commands))
            fence = None
        elif fence is not None:
            fenced.append((i + 1, line))
        elif (line.startswith("    ") and stripped and previous_blank
              and not re.match(r"^\s*([*+-]|\d+\.)\s", previous_prose) and not previous_prose.startswith(" ")
              and not previous_prose.lstrip().startswith("|")):
            start, body = i + 1, []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append((i + 1, lines[i][4:]))
                i += 1
            commands = _code_commands(body)
            if commands:
                blocks.append(Block(name, 0, "indented", start, commands))
            previous_blank = True
            continue
        else:
            prose.append((i + 1, line))
        if fence is None:
            previous_blank = not stripped
            if stripped:
                previous_prose = line
        i += 1
    # inline spans, over the prose joined back (a span may wrap onto the next line)
    joined, offsets = "", []
    for number, line in prose:
        offsets.append((len(joined), number))
        joined += line + "\n"
    for match in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", joined, flags=re.DOTALL):
        span = " ".join(match.group(2).split())
        if not COMMAND.match(span) or len(span.split()) < 2:
            continue                                   # a tool's bare name (`dvc`), a path (`editkit/`), a module
        after = SPAN_MARKER.match(joined, match.end())
        markers = [m.strip() for m in after.group(1).split(",") if m.strip()] if after else []
        number = max(n for offset, n in offsets if offset <= match.start())
        blocks.append(Block(name, 0, "inline", number, [Command(span, markers, number)]))
    blocks.sort(key=lambda block: block.line)
    for index, block in enumerate(blocks, start=1):
        block.index = index
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in DOC_FILES for block in parse_blocks(path)]


BLOCKS = all_blocks()


# --- editkit's command line, resolved in process ------------------------------------------------------------------

def parse_editkit(args: list[str]) -> str:
    """Resolve `editkit <args>` down the command groups and parse the last command's options without invoking it.
    Returns the resolved command path, with "(name only: ...)" when the command's required options are missing (a
    command named in prose); raises click's UsageError (or ValueError) on an unknown command or option."""
    import typer

    from editkit.cli import app

    command = typer.main.get_command(app)   # typer may bring its own click: groups are told by resolve_command
    args = [arg for arg in args if arg != "--help"]   # always valid; parsing it would print the help and exit
    name, context, path = "editkit", None, ["editkit"]
    while hasattr(command, "resolve_command"):
        if not args:                                   # a group named on its own (it exits 2 without a command)
            return " ".join(path) + " (name only: a group)"
        context = command.make_context(name, list(args), parent=context)
        rest = [*getattr(context, "_protected_args", []), *context.args]
        if not rest:
            return " ".join(path) + " (name only: a group)"
        name, command, args = command.resolve_command(context, rest)
        if command is None:
            raise ValueError(f"no such command {rest[0]!r}")
        path.append(name)
    try:
        command.make_context(name, list(args), parent=context)
    except Exception as error:
        if type(error).__name__ != "MissingParameter":
            raise
        return " ".join(path) + f" (name only: missing {error.param.name if error.param else 'a parameter'})"
    return " ".join(path)


def _editkit_argv(text: str) -> list[str] | None:
    """The arguments of every `editkit` invocation in a command line (`a && b` holds two)."""
    found = []
    for part in re.split(r"\s*(?:&&|\|\||;)\s*", text):
        part = re.split(r"\s\d?>>?\s", part)[0]                      # drop a redirection (`> file`)
        for placeholder, value in FILL.items():
            part = part.replace(placeholder, value)
        part = re.sub(r"(?<![\w/])([\w-]+)(?:\|[\w-]+)+", r"\1", part)    # `run|show-config`: the first choice
        words = shlex.split(PLACEHOLDER.sub("x", part.replace("[", " ").replace("]", " ")))
        if words and re.fullmatch(r"(?:\.venv/bin/)?editkit", words[0]):
            found.append(words[1:])
    return found


# --- the copy the commands run in ----------------------------------------------------------------------------------

def _venv() -> Path:
    local = ROOT / ".venv"
    return local if (local / "bin" / "python").exists() else Path(sys.prefix)


def _environment(copy: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
    closed = "http://127.0.0.1:9"      # nothing listens there: any attempt to leave the machine fails at once
    env.update({
        "PATH": f"{copy / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(copy), "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIP_NO_INDEX": "1",
        "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "http_proxy": closed, "https_proxy": closed,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
    })
    return env


class Manual:
    """The temporary copy, and what each command printed there (identical commands run once)."""

    def __init__(self, copy: Path):
        self.copy = copy
        self.env = _environment(copy)
        self.results: dict[str, tuple[int, str, float]] = {}

    def run(self, command: str, cwd: Path | None = None) -> tuple[int, str, float]:
        if command in self.results and cwd is None:
            return self.results[command]
        budget = BUDGETS.get(command, BUDGET_S)
        started = time.monotonic()
        try:
            done = subprocess.run(["bash", "-c", command], cwd=cwd or self.copy, env=self.env, capture_output=True,
                                  text=True, timeout=budget)
            result = (done.returncode, (done.stdout + done.stderr)[-6000:], time.monotonic() - started)
        except subprocess.TimeoutExpired as expired:
            out = (expired.stdout or b"") + (expired.stderr or b"")
            text = out.decode(errors="replace") if isinstance(out, bytes) else out
            result = (124, f"over its budget of {budget} s\n{text[-6000:]}", time.monotonic() - started)
        if cwd is None:
            self.results[command] = result
        return result


@pytest.fixture(scope="session")
def manual(tmp_path_factory) -> Manual:
    copy = tmp_path_factory.mktemp("manual") / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in filter(None, files.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    venv = _venv()
    (copy / ".venv").symlink_to(venv, target_is_directory=True)
    stamp = venv / ".installed"
    if stamp.exists():   # the shared .venv is installed: `make` must not reinstall it from the copy
        os.utime(copy / "pyproject.toml", (stamp.stat().st_mtime - 1, stamp.stat().st_mtime - 1))
    params = copy / "params.yaml"
    params.write_text(re.sub(r"(?m)^(  n: )\d+", rf"\g<1>{SAMPLE_N}", params.read_text(encoding="utf-8"), count=1),
                      encoding="utf-8")
    git = ["git", "-c", "user.email=docs@editkit", "-c", "user.name=docs", "-c", "commit.gpgsign=false"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run([*git, *step], cwd=copy, check=True, capture_output=True)
    manual = Manual(copy)
    rc, out, seconds = manual.run("make demo")
    assert rc == 0, f"`make demo` failed in the copy ({seconds:.0f} s):\n{out}"
    return manual


# --- the tests -----------------------------------------------------------------------------------------------------

def test_commands_are_collected():
    kinds = {block.kind for block in BLOCKS}
    assert {"fenced", "inline"} <= kinds
    ids = [block.id for block in BLOCKS]
    assert len(ids) == len(set(ids))
    assert any(c.text == "make demo" for b in BLOCKS if b.file == "README.md" for c in b.commands)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_docs_command(block: Block, request):
    failures = []
    for command in block.commands:
        where = f"{block.file}:{command.line}: `{command.text}`"
        unknown = [m for m in command.markers if m not in MARKERS]
        if unknown:
            failures.append(f"{where}: unknown marker(s) {unknown}; use {sorted(MARKERS)}")
            continue
        name_only = False
        for argv in _editkit_argv(command.text):
            try:
                name_only |= "(name only" in parse_editkit(argv)
            except Exception as error:  # click.UsageError and friends
                failures.append(f"{where}: does not parse: {error}")
        if failures:
            continue
        if command.is_form and not command.markers:
            continue                                  # placeholders: parsed above, nothing to run as written
        if command.markers and "long" not in command.markers:
            continue                                  # gpu / weights / hub download: parsed above
        run = command.text
        if run in SMOKE and "long" not in command.markers:
            failures.append(f"{where}: has a smoke variant in SMOKE, so it is `long`: mark it (needs: long)")
            continue
        if "long" in command.markers:
            if run in CI_RUNS:
                continue
            if run not in SMOKE:
                failures.append(f"{where}: a `long` command needs a smoke variant in SMOKE (tests/test_docs_commands.py)")
                continue
            run = SMOKE[run]
        elif command.is_form:
            continue
        if run in NAMES or name_only:   # a command named in prose without its required options
            run = f"{run} --help"
        manual: Manual = request.getfixturevalue("manual")
        if run in DESTRUCTIVE:
            scratch = manual.copy.parent / f"scratch-{block.id}"
            shutil.copytree(manual.copy, scratch, symlinks=True, dirs_exist_ok=True)
            rc, out, seconds = manual.run(run, cwd=scratch)
        else:
            rc, out, seconds = manual.run(run)
        if rc != 0:
            failures.append(f"{where}: `{run}` exited {rc} after {seconds:.0f} s:\n{out}")
    assert not failures, "\n\n".join(failures)


def test_marked_editkit_commands_are_checked():
    """The parser rejects what a new user would get wrong (an unknown option, a misspelt command)."""
    assert parse_editkit(["bench", "evaluate", "--bench", "gedit", "--model", "m"]) == "editkit bench evaluate"
    assert parse_editkit(["train", "run", "--config", "c.yaml", "train.max_steps=1"]) == "editkit train run"
    assert parse_editkit(["curate"]) == "editkit curate (name only: a group)"
    assert parse_editkit(["bench", "evaluate"]).startswith("editkit bench evaluate (name only: missing")
    with pytest.raises(Exception, match="no-such-option"):
        parse_editkit(["bench", "evaluate", "--no-such-option", "1"])
    with pytest.raises(Exception, match="no-such-command"):
        parse_editkit(["bench", "no-such-command"])
    with pytest.raises(Exception, match="unexpected"):
        parse_editkit(["summary", "stray"])


# --- durations --------------------------------------------------------------------------------------------------

DURATION = re.compile(r"(?<![\w.])~?\d+(?:[.,]\d+)?(?:\s*[–-]\s*\d+(?:\.\d+)?)?\s*"
                      r"(?:ms|s|sec|seconds?|min|minutes?|h|hours?)(?![\w%])")
# a recorded run: a results file, or a section of a page that cites one (that page is checked too)
SOURCE = re.compile(r"perf/results/[\w.-]+\.json|results/[\w/.-]+|\(\w[\w-]*\.md#[\w-]+\)|table\.json")
# durations that are settings or definitions, not measurements: (file, text of the duration) -> why
NOT_MEASURED = {
    ("training.md", "60 s"): "the MLLM reward client's default timeout, a setting",
    ("development.md", "~30 s"): "the definition of the `slow` test marker",
    ("scale-out.md", "~52 minutes"): "an estimate computed in the text from a stated per-GPU rate",
    ("scale-out.md", "~15 minutes"): "an estimate computed in the text from a stated per-GPU rate",
}


def _sections(path: Path) -> list[tuple[str, str]]:
    """(heading, text) of each section; inline code is dropped (option values such as `timeout_s: 120`)."""
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^(#{1,6} .*)$", text)
    sections = [("", parts[0])]
    sections += [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    return sections


def test_durations_cite_a_recorded_run():
    """A duration the docs state ("~20 s", "39.5 min") must come from a recorded run: its section names the results
    file (perf/results/*.json, results/...) or links the section of the manual that does."""
    offending = []
    for path in DOC_FILES:
        for heading, body in _sections(path):
            durations = [d for d in DURATION.findall(re.sub(r"`[^`\n]*`", "", body))
                         if (path.name, d.strip()) not in NOT_MEASURED]
            if durations and not SOURCE.search(body):
                offending.append(f"{path.name} {heading.strip() or '(top)'}: {durations}")
    assert not offending, "durations without a recorded source in their section:\n" + "\n".join(offending)


def test_ablation_duration_matches_its_record():
    """Every place that says how long `make ablation` takes says what results/ablation/table.json recorded."""
    record = json.loads((ROOT / "results" / "ablation" / "table.json").read_text(encoding="utf-8"))
    minutes = record["total_seconds"] / 60
    places = {path: path.read_text(encoding="utf-8") for path in [*DOC_FILES, ROOT / "Makefile"]}
    checked = 0
    for path, text in places.items():
        for line in text.splitlines():
            if "ablation" not in line.lower():
                continue
            for low, high in re.findall(r"~?(\d+(?:\.\d+)?)(?:\s*[–-]\s*(\d+(?:\.\d+)?))?\s*min\b", line):
                if "pretrain" in line:
                    continue
                checked += 1
                top = float(high or low)
                assert float(low) - 1 <= minutes <= top + 1, (
                    f"{path.name}: says {low}{'–' + high if high else ''} min for the ablation; "
                    f"results/ablation/table.json recorded {minutes:.1f} min:\n{line.strip()}")
    assert checked, "no place states the ablation's duration"
