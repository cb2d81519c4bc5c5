"""The GPU check's code path on CPU with shrunk configs: runs in-process, labels itself cpu-smoke and claims no GPU
measurement."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from perf import gpu_check  # noqa: E402


def test_smoke_path(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = gpu_check.main(["--smoke", "--steps", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["device"] == "cpu-smoke"
    assert result["total_seconds"] < 60
    for name in ("kontext", "qwen_image_edit"):
        check = result[name]
        assert "status" not in check, check  # neither skipped nor failed
        assert check["config"] == "shrunk"
        assert check["measured"]["peak_allocated_bytes"] is None  # not measured on CPU, so not reported
        assert check["ratio_peak_measured_to_predicted"] is None
        assert check["measured"]["seconds_per_sample"] > 0
        assert check["measured"]["saved_activation_bytes_no_ckpt"] > 0
        assert check["lora_params"] == check["lora_params_plan"] > 0
        done, total = check["measured"]["adapter_tensors_with_grad"].split("/")
        assert done == total != "0"  # the backward reached every adapter through the checkpointed blocks
        assert check["predicted"]["peak_bytes"] > 0
    assert result["grounded_masker"]["status"] in ("measured", "skipped")
    if result["grounded_masker"]["status"] == "skipped":
        assert result["grounded_masker"]["reason"]
