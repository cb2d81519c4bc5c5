"""`editkit config explain` covers every field of every shipped config, and docs/config-reference.md is what
`editkit config reference` generates from the config classes."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from editkit.config import load_yaml
from editkit.config_cli import FILES, SECTIONS, _kind_of, render_reference, resolve, rows_of

SHIPPED = sorted(str(p) for p in Path("train/configs").glob("*.yaml")
                 if "compute_environment" not in load_yaml(p))  # accelerate's launcher config is not ours


def _explain(*args: str):
    from editkit.cli import app

    result = CliRunner().invoke(app, ["config", "explain", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _explained_keys(output: str) -> set[str]:
    keys = set()
    for line in output.splitlines()[1:]:  # the first line is the title
        if line.startswith("["):
            keys.add(line[1:line.index("]")])
        elif line and not line.startswith(" ") and " (" in line:
            keys.add(line.split(" (", 1)[0])
    return keys


@pytest.mark.parametrize("section", list(SECTIONS))
def test_explain_covers_every_field_of_every_params_section(section):
    output = _explain(section)
    expected = {row.name for row in rows_of(resolve(SECTIONS[section]))}
    assert _explained_keys(output) == expected
    assert f"params.yaml section `{section}`" in output.splitlines()[0]


@pytest.mark.parametrize("path", SHIPPED)
def test_explain_covers_every_field_of_every_shipped_config_file(path):
    output = _explain(path)
    kind = _kind_of(load_yaml(path), Path(path))
    expected = {row.name for row in rows_of(resolve(FILES[kind][0]))}
    assert _explained_keys(output) == expected


def test_explain_shows_type_range_current_value_default_and_help():
    output = _explain("train/configs/kontext.yaml").splitlines()
    line = next(i for i, text in enumerate(output) if text.startswith("optim.learning_rate ("))
    assert output[line].startswith("optim.learning_rate (float, > 0, <= 1, finite) = ")
    assert "AdamW learning rate" in output[line + 1]
    assert any(text.startswith("train.mixed_precision (\"auto\" | \"no\" | \"bf16\" | \"fp16\")") for text in output)
    masks = _explain("masks").splitlines()
    assert masks[2] == "mode (\"diff\" | \"grounded\") = 'diff'" and "pixel differences" in masks[3]


def test_explain_names_the_kind_it_guessed_and_refuses_what_it_cannot_read(tmp_path):
    assert "(ablation: AblationConfig)" in _explain("train/configs/ablation.yaml").splitlines()[0]
    assert "(pretrain: PretrainConfig)" in _explain("train/configs/ablation_base.yaml").splitlines()[0]
    from editkit.cli import app

    odd = tmp_path / "odd.yaml"
    odd.write_text("nothing_we_know: 1\n")
    for target in ("nosuchsection", str(odd)):
        result = CliRunner().invoke(app, ["config", "explain", target])
        assert result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {learning_rate: .nan}\n")
    result = CliRunner().invoke(app, ["config", "explain", str(bad), "--kind", "train"])
    assert result.exit_code == 2 and "optim.learning_rate: must be > 0" in result.output


def test_the_committed_reference_page_is_the_generated_one():
    committed = Path("docs/config-reference.md").read_text()
    assert committed == render_reference(), (
        "docs/config-reference.md is stale: run `editkit config reference > docs/config-reference.md`")


def test_the_reference_lists_every_field_once_per_config():
    page = render_reference()
    for section, spec in SECTIONS.items():
        for row in rows_of(resolve(spec)):
            assert f"| `{section}.{row.name}` |" in page
    for spec, _ in FILES.values():
        for row in rows_of(resolve(spec)):
            assert f"| `{row.name}` |" in page
