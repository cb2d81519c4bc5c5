"""`editkit bench ...`: build masked GEdit-Bench / ImgEdit-Bench and evaluate editors on them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from editkit.cli_app import command_group, user_errors

app = command_group(help="Masked GEdit-Bench / ImgEdit-Bench: build (readers + mask proposals), evaluate editors, "
                         "compare runs.")

BENCH_HELP = "which benchmark: gedit | imgedit | compbench"


def _user_errors():
    """Missing benchmark files and bad settings end the command with their message (exit 2), not a traceback."""
    return user_errors(FileNotFoundError, ValueError, RuntimeError)


def _params(params_file: Path):
    from benchmarks.build import BenchParams
    from editkit.config import from_dict, read_params

    values = read_params(params_file).get("bench") if params_file.exists() else None
    return from_dict(BenchParams, values, "bench")


def _check_bench(bench: str) -> None:
    from benchmarks.build import READERS

    if bench not in READERS:
        raise typer.BadParameter(f"unknown benchmark {bench!r}; choose one of {', '.join(READERS.names())}")


@app.command("make-fixture")
def make_fixture(
    out: Path = typer.Option(Path("data/bench_fixture"), help="folder to write gedit/ and imgedit/ into"),
    n: int = typer.Option(4, help="items per benchmark"),
) -> None:
    """Write tiny GEdit-Bench and ImgEdit-Bench copies in the public formats, with generated images.

    The real benchmarks cannot be downloaded here; these are the default input of the DVC bench stages. Each also gets
    reference_masks/<key>.png (white = should change), usable with `bench build --masks`.
    """
    from benchmarks.synthetic import make_gedit_fixture, make_imgedit_fixture
    from editkit import store

    with store.atomic_dir(out) as tmp:
        make_gedit_fixture(tmp / "gedit", n=n)
        make_imgedit_fixture(tmp / "imgedit", n=n)
    typer.echo(f"wrote {n}-item fixtures to {out}/gedit and {out}/imgedit")


@app.command()
def build(
    bench: str = typer.Option(..., help=BENCH_HELP),
    path: Optional[Path] = typer.Option(None, help="local copy of the benchmark "
                                                   "(default: params.yaml bench.<bench>_path)"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: data/bench/<bench>)"),
    masks: Optional[Path] = typer.Option(None, help="folder of known masks <key>.png, white = should change "
                                                    "(default: params.yaml bench.masks_dir.<bench>, used for "
                                                    "the configured bench.<bench>_path only)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file with a `bench:` section"),
    metrics: Optional[Path] = typer.Option(None, help="metrics JSON (default: metrics/bench_<bench>.json)"),
    layout: Optional[str] = typer.Option(None, help="public (the benchmark's release) | cocoedit (CoCoEdit's masked "
                                                    "release: its masks become gt); default: params bench.layout"),
) -> None:
    """Read a benchmark release, propose edit masks, and write the masked benchmark (records + images).

    Global edits get the whole image; local edits get grounded masks when bench.grounding is configured, otherwise no
    mask and the needs_review flag (review them in Label Studio, then `editkit annotate merge`).
    """
    from benchmarks.build import build as run_build
    from editkit import store

    _check_bench(bench)
    params = _params(params_file)
    if layout is not None:
        from dataclasses import replace

        params = replace(params, layout=layout)
    configured = Path(getattr(params, f"{bench}_path"))
    if path is not None and masks is None and params.masks_dir.get(bench) and path.resolve() != configured.resolve():
        # bench.masks_dir.<bench> holds the known masks of the configured copy (by default the fixture's reference
        # masks): another copy given with --path does not get them; --masks gives it its own
        from dataclasses import replace

        typer.echo(f"note: bench.masks_dir.{bench} belongs to bench.{bench}_path ({configured}), not used for {path}; "
                   "pass --masks DIR for known masks of this copy", err=True)
        params = replace(params, masks_dir={k: v for k, v in params.masks_dir.items() if k != bench})
    path = path or configured
    out = out or Path("data/bench") / bench
    with _user_errors():
        stats = run_build(bench, path, out, params, masks_dir=masks)
    store.write_metrics(metrics or Path("metrics") / f"bench_{bench}.json", stats)
    typer.echo(f"{bench}: {stats['items']} items -> {out} (mask sources {stats['mask_source']}, "
               f"needs review {stats['needs_review']}, rejected {stats['rejected'] or 0})")


@app.command()
def evaluate(
    bench: str = typer.Option(..., help=BENCH_HELP),
    model: str = typer.Option(..., help="diffusers editing pipeline: hub id or local folder (FLUX.1-Kontext, "
                                        "Qwen-Image-Edit)"),
    lora: Optional[Path] = typer.Option(None, help="LoRA on top of the base model: a diffusers LoRA folder or file "
                                                   "(what `python -m train` saves) or a PEFT adapter folder"),
    lora_scale: Optional[float] = typer.Option(None, help="LoRA weight (default: PEFT lora_alpha/r, else 1)"),
    baseline: Optional[Path] = typer.Option(None, help="an earlier run folder to compare with, side by side"),
    data: Optional[Path] = typer.Option(None, help="built benchmark (default: data/bench/<bench>)"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/<bench>/<model name>[-<lora name>])"),
    steps: int = typer.Option(28, help="denoising steps"),
    seed: int = typer.Option(0, help="seed of every item's generator (fixed: outputs do not depend on batching)"),
    guidance: Optional[float] = typer.Option(None, help="guidance (Kontext) / true CFG (Qwen) scale; default: the "
                                                         "family's"),
    resolution: int = typer.Option(512, help="working area = resolution^2 at the source aspect ratio"),
    batch_size: int = typer.Option(1, help="items per pipeline call (same working size)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:i]"),
    dtype: str = typer.Option("auto", help="auto (bf16 on cuda, fp32 on cpu) | float32 | bfloat16 | float16"),
    judge_endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible judge URL (overrides bench.judge.client)"),
    judge_model: Optional[str] = typer.Option(None, help="judge model name served at the endpoint"),
    judge_repeats: int = typer.Option(1, help="judge each item this many times; report mean and spread (set a "
                                              "temperature > 0 in bench.judge.client)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file with a `bench:` section"),
    metrics_convention: Optional[str] = typer.Option(None, help="masked PSNR/SSIM: standard | cocoedit (CoCoEdit's "
                                                                "scorer; default: params.yaml bench.metrics.convention)"),
    lpips_weights: Optional[Path] = typer.Option(None, help="compbench: squeezenet1_1 (or LPIPS) state dict for LPIPS"),
    clip_model: Optional[Path] = typer.Option(None, help="compbench: transformers CLIP folder (CLIPModel + "
                                                         "CLIPProcessor, e.g. a copy of openai/clip-vit-large-patch14) "
                                                         "for LC-T/LC-I; omitted: no LC scores"),
) -> None:
    """Edit every item (cached per item: an interrupted run resumes), score it, write tables, plots and comparison.

    Scores: masked PSNR/SSIM on the non-edited region vs the source, change inside the edit region, mask area, and
    MLLM judge scores when a judge is configured (GEdit: SC, PQ, O on 0-10; ImgEdit: mean of three 1-5 scores).
    """
    from dataclasses import replace

    from benchmarks.editor import EditorConfig
    from benchmarks.evaluation import evaluate as run_evaluate, make_judge

    _check_bench(bench)
    data = data or Path("data/bench") / bench
    name = Path(model).name + (f"-{lora.name}" if lora else "")
    out = out or Path("runs") / bench / name
    params = _params(params_file)
    judge_config = params.judge.client
    convention = metrics_convention or params.metrics.convention
    if judge_endpoint:
        judge_config = replace(judge_config, backend="openai", endpoint=judge_endpoint,
                               model=judge_model or judge_config.model)
    config = EditorConfig(model=model, lora=str(lora) if lora else None, lora_scale=lora_scale, seed=seed,
                          steps=steps, guidance=guidance,
                          resolution=resolution, batch_size=batch_size, device=device, dtype=dtype)
    with _user_errors():
        scorer = None
        if bench == "compbench":
            from benchmarks.compbench import CompBenchScorer, load_lpips
            from editkit.clip import TransformersClip

            clip = TransformersClip(clip_model, device=device) if clip_model else None
            scorer = CompBenchScorer(load_lpips(lpips_weights), clip)
        judge, client = make_judge(bench, data, judge_config, judge_repeats)
        try:
            result = run_evaluate(data, out, config, judge=judge, baseline_dir=baseline, convention=convention,
                                  compbench=scorer)
        finally:
            if client is not None:
                client.close()
    typer.echo(Path(result["paths"]["markdown"]).read_text())
    if "compare_markdown" in result["paths"]:
        typer.echo(Path(result["paths"]["compare_markdown"]).read_text())
    typer.echo(f"run folder: {out} ({result['stats']})")


@app.command()
def compare(
    run: Path = typer.Argument(..., help="run folder (written by `bench evaluate`)"),
    baseline: Path = typer.Argument(..., help="the run folder to compare against"),
) -> None:
    """Compare two finished runs side by side (baseline → run, Δ) without re-running anything."""
    from benchmarks.report import load_report, write_comparison

    with _user_errors():
        paths = write_comparison(run, load_report(run), load_report(baseline))
    typer.echo(paths["compare_markdown"].read_text())
