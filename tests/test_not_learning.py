"""The not_learning guardrail (ssl_bench/training/learning.py): the flatness decision on hand-made rows, its causes,
a smoke run with a learning rate far too small (fires; stop stops) beside a healthy one (quiet), the below-floor
marks, and zero false alarms over the shipped records."""

import json
import math

import pytest
from omegaconf import open_dict

from ssl_bench.config.compose import compose
from ssl_bench.errors import TrainingStopped
from ssl_bench.pipeline.experiment import run_experiment
from ssl_bench.records import io as results
from ssl_bench.records.identity import run_id
from ssl_bench.records.io import REFERENCE_DIR, below_floor, headline
from ssl_bench.training.health import check_guardrails
from ssl_bench.training.learning import binomial_sem, fell, healthy_reference, improved, not_learning


def demo(*extra):
    return compose(["method=swav", "dataset=fashion_mnist", "budget=demo", "train.epochs=3", *extra])


def rows_of(losses, sems, **series):
    rows = [{"epoch": e, "step": 64 * (e + 1), "loss": v, "loss_sem": s, "lr": 1e-9}
            for e, (v, s) in enumerate(zip(losses, sems, strict=True))]
    for key, values in series.items():
        for r, v in zip(rows, values, strict=True):
            r[key] = v
    return rows


def test_a_fall_is_decided_from_the_noise_not_a_constant():
    # the same fall is within a large standard error and beyond a small one
    assert not fell([3.72, 3.71, 3.70], 0.01, 3.0)
    assert fell([3.72, 3.71, 3.70], 0.001, 3.0)
    # z * sqrt(2) * sem is the boundary; a rise is no fall
    assert not fell([1.0 + 3 * math.sqrt(2) * 0.1 - 1e-9, 1.0], 0.1, 3.0)
    assert fell([1.0 + 3 * math.sqrt(2) * 0.1 + 1e-9, 1.0], 0.1, 3.0)
    assert not fell([1.0, 2.0, 3.0], 0.0, 3.0)
    # improvement is one-sided: a signal that got worse did not improve
    assert improved([70.0, 80.0], [1.0], 3.0, +1) and not improved([80.0, 70.0], [1.0], 3.0, +1)
    assert improved([1.0, 0.5], [0.01], 3.0, -1) and not improved([0.5, 1.0], [0.01], 3.0, -1)
    assert binomial_sem(50.0, 100) == pytest.approx(5.0)


def test_not_learning_on_hand_made_rows():
    cfg = demo()
    still = rows_of([3.7263, 3.7209, 3.7271], [0.004, 0.004, 0.0046], health_alignment=[0.97, 0.97, 0.97],
                    health_alignment_sem=[0.02] * 3, online_linear_top1=[74.6, 74.2, 74.0],
                    weight_drift=[1e-9, 1e-9, 1e-9])
    msg = not_learning(still, cfg)
    assert msg and "3.7263, 3.7209, 3.7271" in msg and "standard error" in msg and "healthy demo runs" in msg
    # without a healthy reference for the budget: no fall beyond the noise decides
    other = demo()
    with open_dict(other):
        other.choices.budget = "no-such-budget"
    assert healthy_reference("no-such-budget") == {}
    assert "no healthy reference recorded" in not_learning(still, other)
    assert not_learning(rows_of([3.72, 3.71, 3.70], [0.001] * 3), other) is None
    # causes ranked by the signals: weights that stood still put the learning rate first
    assert msg.split("most likely first: ")[1].startswith("a learning rate or schedule")
    # judged once, at the window's last epoch (3), never before or after
    assert not_learning(still[:2], cfg) is None and not_learning([*still, still[-1]], cfg) is None
    # a loss that falls beyond its noise: quiet
    assert not_learning(rows_of([3.7, 3.5, 3.3], [0.004] * 3), cfg) is None
    # a fall within its (huge) noise, but not confidently smaller than a healthy one: quiet
    assert not_learning(rows_of([3.7, 3.6, 3.5], [0.2] * 3), cfg) is None
    # a loss that rises with still weights is not learning either
    assert not_learning(rows_of([4.42, 4.69, 4.71], [0.02, 0.03, 0.03]), cfg)
    # flat loss but the online probe rises far beyond its binomial noise (500 test images): quiet
    rising = [dict(r, online_linear_top1=v) for r, v in zip(still, [60.0, 70.0, 80.0], strict=True)]
    assert not_learning(rising, cfg) is None
    # a record without loss_sem has no known noise: its fall alone against the healthy falls; without a reference,
    # only a loss that never fell
    legacy = [{k: v for k, v in r.items() if k != "loss_sem"} for r in still]
    assert not_learning(legacy, cfg)
    assert not_learning(legacy, other) is None and not_learning([dict(r, loss=2.0) for r in legacy], other)
    # weights that move while the loss is flat: a saturating temperature or head first
    moving = [dict(r, weight_drift=0.05) for r in still]
    assert not_learning(moving, cfg).split("most likely first: ")[1].startswith("a temperature")
    # a warm-up longer than the run comes first when it is
    warm = demo("optim.warmup_epochs=10")
    assert not_learning(still, warm).split("most likely first: ")[1].startswith("a warm-up longer")


def test_not_learning_through_check_guardrails_once_and_after_no_other():
    cfg = demo()
    rows = rows_of([3.7263, 3.7209, 3.7271], [0.004, 0.004, 0.0046])
    found = check_guardrails(rows, cfg)
    assert [g["check"] for g in found] == ["not_learning"]
    # another guardrail already named the failure: not_learning keeps quiet
    earlier = [dict(rows[0], guardrails=[{"check": "few_prototypes", "message": "..."}]), *rows[1:]]
    assert check_guardrails(earlier, cfg) == []
    # the window is a schema key
    with open_dict(cfg):
        cfg.health.flat_epochs = 2
    assert check_guardrails(rows[:2], cfg)[0]["check"] == "not_learning"


def smoke(tmp_path, *extra):
    return compose(["budget=smoke", f"output_dir={tmp_path}", "eval.random_baseline=false", "train.epochs=3",
                    *extra])


def test_a_smoke_run_with_a_tiny_learning_rate_fires_and_stop_stops(tmp_path, capsys):
    tiny = ["method=swav", "optim.lr=1e-9"]
    cfg = smoke(tmp_path / "warn", *tiny)
    summary = run_experiment(cfg)
    assert [g["check"] for g in summary["guardrails"]] == ["not_learning"], summary["guardrails"]
    assert summary["guardrails"][0]["epoch"] == 2
    out = capsys.readouterr().out
    assert "guardrail not_learning (epoch 3)" in out and "optim.lr=1e-09" in out
    rows = results.read_metrics(tmp_path / "warn" / run_id(cfg))
    assert all("loss_sem" in r and "health_alignment_sem" in r for r in rows)
    with pytest.raises(TrainingStopped, match="guardrail not_learning after epoch 3"):
        run_experiment(smoke(tmp_path / "stop", *tiny, "train.guardrails=stop"))


@pytest.mark.parametrize("method", ["swav", "simclr", "deepclusterv2", "selav2", "carl"])
def test_a_healthy_smoke_run_does_not_fire(tmp_path, method):
    summary = run_experiment(smoke(tmp_path, f"method={method}"))
    assert not [g for g in summary["guardrails"] if g["check"] == "not_learning"], summary["guardrails"]


def test_below_the_floor_is_said_in_the_record_line():
    m = {"knn_top1": 72.95, "knn_top1_k20": 72.95, "random_knn_top1": 76.21, "random_knn_top1_k20": 76.21,
         "linear": {"top1": 80.0}, "random": {"linear": {"top1": 79.8}}}
    assert below_floor(m) == ["knn"]
    assert below_floor({"knn_top1": 80.0, "random_knn_top1": 76.21}) == [] and below_floor({"knn_top1": 1.0}) == []
    line = headline({"metrics": m})
    assert "random init 76.21%" in line and "below the floor: the knn top-1" in line
    assert "below the floor" not in headline({"metrics": dict(m, knn_top1=80.0, knn_top1_k20=80.0)})


def test_the_claims_numbers_table_marks_records_below_their_floor():
    from ssl_bench.analysis.claims.planning import Cell
    from ssl_bench.analysis.claims.writing import numbers_table

    low = {"metrics": {"knn_top1": 70.0, "random_knn_top1": 76.0}}
    high = {"metrics": {"knn_top1": 80.0, "random_knn_top1": 76.0}}
    cell = Cell("no KL", "carl", [0, 1], summaries={0: low, 1: high}, epochs={0: [], 1: []})
    assert "no KL (1 of 2 below their random-init floor)" in numbers_table({("no KL", "carl"): cell})
    cell.summaries = {0: high, 1: high}
    assert "below" not in numbers_table({("no KL", "carl"): cell})


def test_zero_false_alarms_over_the_shipped_records():
    from benchmarks.guardrail_catalogue import replay, seed_spread

    runs = sorted(p for p in (REFERENCE_DIR / "runs").iterdir() if (p / "metrics.jsonl").exists())
    spread = seed_spread(runs)
    fired = {r.name: [f for f in replay(r, spread.get(r)) if f["check"] == "not_learning"] for r in runs}
    assert len(runs) > 100 and not any(fired.values()), {k: v for k, v in fired.items() if v}


def test_the_catalogue_json_agrees_with_its_fragment():
    data = json.loads((REFERENCE_DIR.parent / "health" / "catalogue.json").read_text())
    md = (REFERENCE_DIR.parent / "health" / "catalogue.md").read_text()
    assert f"{data['held_out_detected']} of {data['held_out_n']} held-out failures" in md
    assert data["shipped_not_learning"] == 0


def test_a_stopped_case_reads_its_stop_line_with_repository_paths():
    """The catalogue quotes the line that stopped a case, with the folder it was trained in cut to the repository
    path (the records were made in another checkout), and the shipped catalogue carries no machine's paths."""
    from benchmarks.guardrail_catalogue import ended

    tail = ["  config: /x/wt/results/health/catalogue/c/config.yaml (print_config=true prints it)",
            "stopped: loss became nan at epoch 1; the last good checkpoint is kept in "
            "/x/wt/results/health/catalogue/c/ck"]
    assert ended(tail) == ("stopped: loss became nan at epoch 1; the last good checkpoint is kept in "
                           "results/health/catalogue/c/ck")
    assert ended(["error: no such key"]) == "error: no such key" and ended([]) == "stopped"
    text = (REFERENCE_DIR.parent / "health" / "catalogue.json").read_text()
    assert "/work/" not in text and "stopped: stopped" not in text
