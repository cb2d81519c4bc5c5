"""Plugins by dotted path: the walk-through of docs/extending.md, run from its own code blocks and commands.

The module files are the page's code blocks that start with ``# my_plugins/<file>``; they are written to a temporary
folder the package never imports, and only the configs name them (``my_rewards:sharpness``, ``my_sources:Squares``).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from editkit.errors import ConfigError, UnknownName, UserError
from tests.support.numerics import assert_close

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLUGIN_MODULES = ("my_rewards", "my_sources", "my_sources_broken")


def _blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def _files() -> dict[str, str]:
    """``my_plugins/<file>`` -> text, from the blocks whose first line names the file."""
    files = {}
    for _, body in _blocks():
        first = body.splitlines()[0] if body.strip() else ""
        if re.fullmatch(r"# my_plugins/[\w.]+", first):
            files[first[2:]] = body
    return files


def _commands() -> list[str]:
    """The walk-through's command lines (the bash blocks that name my_plugins)."""
    return [line.strip() for language, body in _blocks() if language == "bash" and "my_plugins" in body
            for line in body.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The page's files under ``tmp_path/my_plugins``, that folder on sys.path, the working directory tmp_path."""
    for name, text in _files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert not [m for m in PLUGIN_MODULES if m in sys.modules]  # nothing of the project imports them
    monkeypatch.syspath_prepend(str(tmp_path / "my_plugins"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    from curate.sources import SOURCES
    from train.rewards import REWARDS

    for registry in (REWARDS, SOURCES):
        for name in [n for n in list(registry._plugins) if n.split(":")[0] in PLUGIN_MODULES]:
            registry.pop(name)
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)


def test_the_page_has_the_walk_through():
    assert set(_files()) == {"my_plugins/my_rewards.py", "my_plugins/my_sources.py", "my_plugins/params.yaml",
                             "my_plugins/train.yaml", "my_plugins/try_reward.py"}
    assert any(c.endswith("python my_plugins/try_reward.py") for c in _commands())
    assert any(" editkit curate ingest " in f" {c} " for c in _commands())


def test_a_trainer_config_naming_a_plugin_reward_computes_it(plugins):
    import torch

    from train.config import load_config
    from train.rewards import REWARDS, RewardInputs, WeightedRewards

    config = load_config(plugins / "my_plugins" / "train.yaml")
    assert "my_rewards:sharpness" in config.rewards.weights and "my_rewards:sharpness" in REWARDS
    assert "my_rewards:sharpness" not in REWARDS.names()  # a dotted path is not registered
    rewards = WeightedRewards(config.rewards.weights, config.rewards.options)
    flat = torch.full((2, 3, 16, 16), 0.5)
    striped = flat.clone()
    striped[..., ::2] = 1.0
    images = torch.cat([flat[:1], striped[:1]])
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True  # pixel_consistency scores the background outside it
    total, parts = rewards(RewardInputs(images=images, sources=images.clone(), edit_masks=masks,
                                        prompts=["p", "p"], edit_types=["add", "add"]))
    sharp = parts["my_rewards:sharpness"]
    assert sharp[0] == 0  # options.scale = 2, mean |dx| = 0.5 on the striped image
    assert_close(sharp[1], 2.0 * 0.5, dtype=sharp.dtype, accumulations=16 * 15, why="mean of 16x15 |dx| terms")
    assert torch.isfinite(total).all()
    assert_close(total, sharp.double() + 0.5 * parts["pixel_consistency"], dtype=sharp.dtype, accumulations=2,
                 why="the weighted sum of two rewards, one of them float32")


def test_a_params_file_naming_a_plugin_source_yields_records(plugins):
    from curate.stages.ingest import IngestParams, open_source, to_record
    from editkit import config

    params_path = plugins / "my_plugins" / "params.yaml"
    ingest = config.load_section(IngestParams, "ingest", params_path)
    assert ingest.source == "my_sources:Squares"
    source = open_source(ingest, params_path)
    records = [to_record(pair, ingest.policy()) for pair in source]
    assert len(source) == len(records) == 4
    assert all(image is not None and record["instruction"].startswith("add a ") for record, image in records)


def test_the_page_s_commands_run_as_written(plugins):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins / "my_plugins"), str(ROOT)])}
    ran = 0
    for line in _commands():
        if "# needs:" in line:
            continue
        words = shlex.split(line)
        assert words[0] == "PYTHONPATH=my_plugins", line
        program = {"python": [sys.executable], "editkit": [sys.executable, "-m", "editkit"]}[words[1]]
        run = subprocess.run([*program, *words[2:]], cwd=plugins, env=env, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, f"{line}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        ran += 1
        if words[1] == "editkit":
            assert "ingest: 4 ok, 0 rejected of 4" in run.stdout, run.stdout
            assert any((plugins / "data" / "my_ingest" / "records").iterdir())
        else:
            assert "my_rewards:sharpness" in run.stdout
    assert ran == 2


def test_a_bad_dotted_path_is_one_line_naming_it(plugins):
    from curate.sources import SOURCES
    from train.config import load_config
    from train.rewards import REWARDS

    with pytest.raises(UnknownName) as missing:
        REWARDS.get("my_rewards:sharpnes")
    assert str(missing.value) == "reward 'my_rewards:sharpnes': module 'my_rewards' has no attribute 'sharpnes'"
    with pytest.raises(UnknownName, match=r"^reward 'no_such_module:x': cannot import module 'no_such_module' "):
        REWARDS.get("no_such_module:x")
    assert "no_such_module:x" not in REWARDS
    bad = plugins / "bad.yaml"
    bad.write_text('rewards:\n  weights: {"my_rewards:sharpnes": 1.0}\n')
    with pytest.raises(ConfigError) as config_error:
        load_config(bad)
    assert "rewards.weights: reward 'my_rewards:sharpnes'" in str(config_error.value)
    assert "\n" not in str(config_error.value)
    # the same interface check as a built-in: a source class must be openable and iterable
    (plugins / "my_plugins" / "my_sources_broken.py").write_text("class Squares:\n    def __init__(self, a, b): ...\n"
                                                                  "    def __len__(self): return 0\n")
    with pytest.raises(UserError) as interface:
        SOURCES.get("my_sources_broken:Squares")
    assert str(interface.value) == ("pair source (ingest.source) 'my_sources_broken:Squares' lacks __iter__ "
                                    "(needs __len__, __iter__)")
    sys.modules.pop("my_sources_broken", None)


def test_every_built_in_passes_its_registry_s_check():
    from benchmarks.build import READERS
    from curate.sources import SOURCES
    from curate.sources.presets import PRESETS
    from editkit.mllm.backends import BACKENDS
    from train.adapters import ADAPTERS
    from train.rewards import REWARDS
    from train.trainers import TRAINERS

    for registry in (ADAPTERS, REWARDS, TRAINERS, BACKENDS, SOURCES, PRESETS, READERS):
        assert registry.check is not None, registry.kind
        assert set(registry.load_all()) == set(registry.names())  # get() runs the check on each entry
