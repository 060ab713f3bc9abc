"""The Python API on the smoke budget: the command lines' overrides in, the records back."""

import sys

import pytest

from ssl_bench import api
from ssl_bench.errors import ConfigError


def test_run_evaluate_compare_and_load_from_python(tmp_path):
    summary = api.run(["method=swav", "budget=smoke", f"output_dir={tmp_path / 'runs'}"])
    assert summary["method"] == "swav" and 0 <= summary["metrics"]["knn_top1"] <= 100
    assert api.load_run(summary["path"])["metrics"]["knn_top1"] == summary["metrics"]["knn_top1"]
    metrics = api.evaluate(summary["path"], eval="knn", overrides=["eval.seeds=[1]"])
    assert 0 <= metrics["knn"]["top1"] <= 100
    # The comparison reuses the finished record (same config, same output folder): nothing trains again.
    table = api.compare(["methods=[swav]", "budget=smoke", f"results={tmp_path}"], train=False)
    assert list(table["method"]) == ["swav"]
    typed = api.compare(["budget=smoke"], train=False, methods=["swav"], results=tmp_path)  # compare.plan's keywords
    assert typed.equals(table)
    runs = api.load(tmp_path)
    assert len(runs) == 1 and runs.loc[0, "method"] == "swav"
    with pytest.raises(ConfigError, match="valid keys in 'data'"):
        api.compose(["data.batchsize=3"])
    with pytest.raises(ConfigError, match="output_dir=/dev/null/runs: /dev/null is a file"):
        api.run(["budget=smoke", "output_dir=/dev/null/runs"])


def test_import_ssl_bench_is_cheap():
    import subprocess

    code = "import sys, ssl_bench; print('torch' in sys.modules, 'hydra' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
