"""Run logging of every trainer, on the main process: TensorBoard always, wandb when installed and asked for, and two
plain files: ``metrics.jsonl`` (every logged scalar per step) and the curve CSV that ``dvc plots`` reads (the
editor's rewards by default; a trainer names its own columns). The run's page, ``report/index.html``
(:mod:`train.report_html`: curves and each evaluation's samples), is redrawn after each evaluation and at the end.

On resume, lines of steps after the checkpoint (written before a crash) are dropped so the files read as one run.
"""
from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from pathlib import Path

CSV_FIELDS = ["step", "reward_mean", "reward_std", "loss", "eval_reward_mean", "eval_bg_psnr"]


class RunLogger:
    def __init__(self, output_dir: Path, config, run_config: dict, enabled: bool,
                 csv_fields: tuple[str, ...] | list[str] | None = None):
        self.enabled = enabled
        self.csv_fields = list(csv_fields or CSV_FIELDS)
        self.metrics_path = output_dir / "metrics.jsonl"
        self.csv_path = output_dir / config.plots_csv
        self.tensorboard = self.wandb = self.report = None
        self._report_due = False
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        from train.report_html import TrainReport

        self.report = TrainReport(output_dir, self.metrics_path)
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        if config.wandb:
            try:
                import wandb
            except ImportError:
                print("logging.wandb is set but wandb is not installed (pip install 'editkit[wandb]'); skipping it")
            else:
                self.wandb = wandb.init(project=config.wandb_project, config=run_config, dir=str(output_dir))

    def truncate_after(self, step: int) -> None:
        """Forget what was logged after ``step`` (a resumed run re-does those steps)."""
        if not self.enabled:
            return
        if self.metrics_path.exists():
            lines = [l for l in self.metrics_path.read_text().splitlines() if l and json.loads(l)["step"] <= step]
            self.metrics_path.write_text("".join(l + "\n" for l in lines))
        if self.csv_path.exists():
            with self.csv_path.open() as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
            self._write_csv(rows, "w")
        self.report.truncate_after(step)

    @contextmanager
    def evaluation(self, runtime, step: int):
        """Around the runtime's evaluation: its samples are recorded for the report, drawn at the next :meth:`log`."""
        if self.report is None:
            yield
            return
        with self.report.capture(runtime, step):
            yield
        self._report_due = True

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps({"step": step, **scalars}, sort_keys=True) + "\n")
        row = {"step": step, **{k: scalars.get(k, "") for k in self.csv_fields[1:]}}
        if any(row[k] != "" for k in self.csv_fields[1:]):
            self._write_csv([row], "a")
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if self._report_due:
            self._write_report()

    def _write_report(self) -> None:
        self._report_due = False
        try:
            self.report.write()
        except OSError as error:  # the page is a view of the run: a full disk must not end the training
            print(f"could not write the report page {self.report.dir / 'index.html'}: {error}")

    def _write_csv(self, rows: list[dict], mode: str) -> None:
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        new = mode == "w" or not self.csv_path.exists()
        with self.csv_path.open(mode, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.csv_fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        if self.report is not None:
            self._write_report()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
