"""benchmarks/device_check.sh --cpu: the prepared GPU check runs every one of its steps, tiny, on the CPU, so the
script cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_device_check_runs_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--cpu"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "device_check.json").read_text())
    table = (tmp_path / "out" / "device_check.md").read_text()
    assert data["errors"] == [] and data["skipped"] == [], (data["errors"], data["skipped"])
    s = data["sections"]
    from ssl_bench.methods import registry

    assert [r["method"] for r in s["methods"]] == list(registry())
    assert all(r["loss_finite"] and r["record_written"] and r["precision"] == "bf16" for r in s["methods"])
    assert s["sinkhorn"][0]["same_codes"]
    variants = {(r["variant"], r["images_per_gpu"]) for r in s["swav"]}
    assert variants == {(v, b) for v in ("eager", "channels_last", "compile", "compile+channels_last")
                        for b in (4, 8)}
    assert all(r["loss_finite"] and r["images_per_s"] > 0 for r in s["swav"])
    assert [r["backend"] for r in s["loader"]] == [r["backend"] for r in s["fed"]] == ["pil", "hybrid", "device_decode"]
    assert all(r["images_per_s"] > 0 for r in s["loader"] + s["fed"])
    assert "## swav" in table and "| device_decode |" in table


def test_the_gpu_sizes_compose(tmp_path):
    # The GPU run cannot be tried here: at least its configs must be valid (a bad key there would cost a device
    # session).
    from benchmarks.device_check import loader_cfg, sizes, swav_cfg
    from ssl_bench.config.compose import compose
    from ssl_bench.methods import registry

    sz = sizes(cpu=False)
    for batch in sz.swav_batches:
        cfg = swav_cfg(sz, batch, "bf16", ["train.compile=true", "train.channels_last=true"])
        assert cfg.backbone.name == "resnet50" and cfg.train.precision == "bf16" and cfg.data.batch_size == batch
        assert [(s.n, s.size) for s in cfg.crops.values()] == [(2, 224), (6, 96)]
    for backend in ("pil", "hybrid", "device_decode"):
        assert loader_cfg(sz, tmp_path, backend).augment.backend == backend
    for name in registry():
        compose([f"method={name}", "budget=smoke", "dataset=imagefolder", f"dataset.root={tmp_path}",
                 "train.precision=bf16", *sz.method_over])
