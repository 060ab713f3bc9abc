"""Whole-run proof (ssl_bench.analysis.retrain) and per-test-image predictions: a record retrained whole at today's
code is
equal number for number and then gets the new run's predictions.npz; an altered record is reported unequal and left
untouched; an interrupted retrain continues from its checkpoint to the same numbers; a dirty tree is refused."""

import math
import shutil

import numpy as np
import pytest

from ssl_bench.analysis import retrain
from ssl_bench.config.compose import compose
from ssl_bench.errors import ConfigError, TrainingStopped
from ssl_bench.pipeline.experiment import run_experiment
from ssl_bench.records.io import read_json, read_metrics, read_predictions, read_summary, record_dirs, write_metrics
from ssl_bench.reference import main as reference_main

CLEAN = {"git": "abc1234", "git_clean": True}


@pytest.fixture(scope="module")
def smoke_record(tmp_path_factory):
    """A smoke-budget record with the linear probe over two evaluation seeds (each draws its own test subset)."""
    ref = tmp_path_factory.mktemp("reference")
    cfg = compose(["method=swav", "budget=smoke", "seed=3", "eval.protocols=[knn,linear]", "eval.seeds=[0,1]",
                   f"output_dir={ref / 'runs'}"])
    run_experiment(cfg)
    return record_dirs(ref / "runs")[0]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("scratch")


def test_a_record_keeps_its_predictions_and_its_accuracies_are_theirs(smoke_record):
    p = read_predictions(smoke_record)
    m = read_summary(smoke_record)["metrics"]
    assert list(p["seeds"]) == [0, 1] and p["knn"].shape == p["linear"].shape == p["labels"].shape == (2, 128)
    assert p["knn"].dtype == np.uint8 and p["index"].dtype == np.uint16
    assert not np.array_equal(p["index"][0], p["index"][1])  # seed 1 draws another test subset: rows name images
    for name in ("knn", "linear"):
        right = [100.0 * float((p[name][i] == p["labels"][i]).sum()) / p["labels"].shape[1] for i in range(2)]
        assert right == m[name]["per_seed"]["top1"]  # the record's numbers come from exactly these answers
    assert read_predictions(smoke_record.parent) is None  # a folder without them


def test_a_whole_run_retrain_is_equal_and_brings_the_predictions(smoke_record, scratch, tmp_path):
    ref_run = tmp_path / "runs" / smoke_record.name
    shutil.copytree(smoke_record, ref_run, ignore=shutil.ignore_patterns("checkpoint*", "predictions.npz"))
    res = retrain.retrain_record(ref_run, scratch, CLEAN)
    assert res.status == retrain.EQUAL and res.equal and res.exact, res.line()
    assert res.compared > 50 and not res.differences and "all" in res.line() and "exact" in res.line()
    assert (ref_run / "predictions.npz").read_bytes() == (smoke_record / "predictions.npz").read_bytes()
    saved = read_json(ref_run / "retrain.json")
    assert saved["equal"] is True and saved["commit"] == "abc1234" and saved["git_clean"] is True
    assert saved["kernel"] == res.kernel and saved["threads"] == 1
    # Resumable: proven at this commit, the next pass skips it (no training).
    assert retrain.already_equal(ref_run, "abc1234") and not retrain.already_equal(ref_run, "def5678")


def test_an_altered_record_is_a_finding_and_stays_untouched(smoke_record, scratch, tmp_path):
    ref_run = tmp_path / "runs" / smoke_record.name
    shutil.copytree(smoke_record, ref_run, ignore=shutil.ignore_patterns("checkpoint*", "predictions.npz"))
    rows = read_metrics(ref_run)
    rows[1]["loss"] += 1e-6
    write_metrics(ref_run, rows)
    before = {p.name: p.read_bytes() for p in ref_run.iterdir()}
    res = retrain.retrain_record(ref_run, scratch, CLEAN)  # the scratch record of the test above: compared again
    assert res.status == retrain.DIFFERS and not res.equal and res.n_differences == 1
    assert res.differences[0]["key"] == "metrics.jsonl[epoch 1].loss" and "FINDING" in res.line()
    after = {p.name: p.read_bytes() for p in ref_run.iterdir() if p.name != "retrain.json"}
    assert after == before  # nothing overwritten, no predictions added
    assert (scratch / "abc1234" / "runs" / smoke_record.name / "summary.json").exists()  # the new record is kept
    assert read_json(ref_run / "retrain.json")["differences"][0]["recorded"] == rows[1]["loss"]


def test_an_interrupted_retrain_continues_from_its_checkpoint_to_the_same_numbers(smoke_record, tmp_path):
    ref_run = tmp_path / "ref" / "runs" / smoke_record.name
    shutil.copytree(smoke_record, ref_run, ignore=shutil.ignore_patterns("checkpoint*", "predictions.npz"))
    cfg = compose([*read_summary(ref_run)["overrides"], f"output_dir={tmp_path / 'scratch' / 'abc1234' / 'runs'}"])
    cfg.run_id = ref_run.name  # the scratch folder a retrain of it uses (a name with '=' and ',' is no override)
    with pytest.raises(TrainingStopped):  # stopped after epoch 1, as a kill between epochs leaves it
        run_experiment(cfg, epoch_callbacks=[lambda epoch, row: "stop" if epoch == 0 else None])
    res = retrain.retrain_record(ref_run, tmp_path / "scratch", CLEAN)
    assert res.resumed and res.status == retrain.EQUAL, res.line()


def test_a_dirty_tree_is_refused(monkeypatch, smoke_record, tmp_path):
    monkeypatch.setattr("ssl_bench.pipeline.experiment.code_state", lambda: {"git": "abc1234", "git_clean": False})
    with pytest.raises(ConfigError, match="uncommitted"):
        retrain.retrain(tmp_path, [smoke_record], tmp_path / "scratch")
    with pytest.raises(ConfigError, match="uncommitted"):  # the command line too, before anything is trained
        reference_main(["retrain", "runs=[swav-fashion_mnist-demo-s0-fe46b437]", f"scratch={tmp_path}"])
    assert not (smoke_record / "retrain.json").exists() and not list(tmp_path.iterdir())


def test_numbers_compare_as_records_mean_them():
    rec = {"a": 1.0, "b": math.nan, "c": True, "d": 2, "gone": 3.0}
    diffs, added = retrain.compare(rec, {"a": 1.0, "b": math.nan, "c": 1, "d": 2, "new": 4.0})
    assert [d["key"] for d in diffs] == ["c", "gone"] and diffs[1]["missing"] and added == ["new"]
    tree = retrain.numbers({"loss": 1.5, "wall_s": 9.0, "knn": {"settings": {"k": [20], "mode": "x", "wall_s": 1}}})
    assert tree == {"loss": 1.5, "knn.settings.k[0]": 20}  # clock readings and words are not results


def test_the_table_set_is_every_method_at_every_seed():
    from ssl_bench.methods import registry
    from ssl_bench.records.io import REFERENCE_DIR

    table = retrain.record_set("table", REFERENCE_DIR)
    assert {d.name.split("-")[0] for d in table} == set(registry()) and len(table) % len(registry()) == 0
    assert all("-demo-s" in d.name for d in table) and table[0].name.endswith(table[0].name.rpartition("-")[2])
    with pytest.raises(ConfigError, match="valid choices"):
        retrain.record_set("everything", REFERENCE_DIR)
