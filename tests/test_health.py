"""Health, online linear probe and guardrails (ssl_bench/training/health.py): the measurements, the guardrails'
checks, and the promise that none of it changes training (bit-identical weights and losses with it on and off)."""

import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ssl_bench.analysis.health_plot import guardrail_table, replay_guardrails
from ssl_bench.config.compose import compose
from ssl_bench.errors import ConfigError, TrainingStopped
from ssl_bench.models.networks import ProjectionHead, SmallConvNet, SSLModel
from ssl_bench.pipeline.experiment import run_experiment
from ssl_bench.records import io as results
from ssl_bench.records.identity import configuration_id, run_id
from ssl_bench.records.io import REFERENCE_DIR, read_config, read_summary
from ssl_bench.training.health import (
    NonFiniteWatch,
    alignment,
    check_guardrails,
    effective_rank,
    feature_std,
    few_prototypes,
    linear_probe_top1,
    low_rank,
    uniform_codes,
    uniformity,
)

OFF = ["health.samples=0", "health.linear_probe=false", "train.guardrails=off"]


def smoke(tmp_path, *extra):
    return compose(["budget=smoke", f"output_dir={tmp_path}", "eval.random_baseline=false", *extra])


def _weights(run):
    return load_file(str(run / "checkpoint" / "model.safetensors"))


def test_effective_rank_alignment_uniformity_std_on_known_inputs():
    g = torch.Generator().manual_seed(0)
    eye = torch.eye(8)
    assert effective_rank(eye) == pytest.approx(8.0, rel=1e-6)  # every direction equally
    one_direction = torch.ones(16, 1) @ torch.randn(1, 8, generator=g)
    assert effective_rank(one_direction) == pytest.approx(1.0, abs=1e-3)
    x = torch.randn(64, 8, generator=g)
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, -x) == pytest.approx(4.0)  # antipodal views: ||2u||^2
    assert uniformity(one_direction) == pytest.approx(0.0, abs=1e-9)  # every image on one point
    assert uniformity(torch.randn(512, 32, generator=g)) < -3.0  # spread over the sphere
    assert feature_std(one_direction) == pytest.approx(0.0, abs=1e-9)
    assert feature_std(torch.randn(4096, 16, generator=g)) == pytest.approx(1 / math.sqrt(16), rel=0.05)


def test_the_linear_probe_learns_separable_labels_without_drawing_random_numbers():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 4
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 16, generator=g)
    state = torch.random.get_rng_state()
    top1 = linear_probe_top1((x[:200], y[:200]), (x[200:], y[200:]), 3, steps=50, lr=0.1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert top1 > 95


def test_each_guardrail_check_on_hand_made_inputs():
    ln = math.log(30)
    assert uniform_codes([ln * 1.005, ln * 0.998], 30) and "ln(K)" in uniform_codes([ln, ln], 30)
    assert uniform_codes([ln, ln * 0.9], 30) is None  # learning: left the plateau
    assert uniform_codes([ln], 30) is None  # one epoch is not two
    assert uniform_codes([ln, float("nan")], 30) is None
    assert few_prototypes(1, 100, 0.1) and few_prototypes(10, 100, 0.1) is None
    assert low_rank(1.2, 2.0) and low_rank(5.0, 2.0) is None and low_rank(float("nan"), 2.0) is None
    assert "projections 1.10" in low_rank(1.1, 1.5, "projections")
    cfg = compose(["method=swav", "budget=smoke", "method.num_prototypes=30"])
    rows = [{"epoch": 0, "loss": ln}, {"epoch": 1, "loss": ln, "prototypes_used": 2, "health_rank_backbone": 1.1,
                                         "health_rank_projection": 3.0}]
    found = check_guardrails(rows, cfg)
    assert [g["check"] for g in found] == ["uniform_codes", "few_prototypes", "low_rank"]
    # Causes name the method's own keys with their values, and none it does not have.
    assert "method.queue_start_epoch=" in found[0]["message"]
    assert "method.freeze_prototypes_iters=" in found[0]["message"]
    assert "lambda_start" not in found[1]["message"]
    carl = compose(["method=carl", "budget=smoke"])
    assert "method.lambda_start=" in check_guardrails([{"epoch": 0, "loss": 0.0, "prototypes_used": 1}], carl)[0][
        "message"]
    # Once per run: a guardrail that fired at an earlier epoch stays quiet.
    rows[1]["guardrails"] = found
    assert check_guardrails([*rows, {"epoch": 2, "loss": ln, "prototypes_used": 2}], cfg) == []
    simclr = compose(["method=simclr", "budget=smoke"])  # no prototypes: no ln(K) check
    assert check_guardrails([{"epoch": 0, "loss": 3.4}, {"epoch": 1, "loss": 3.4}], simclr) == []


def test_the_projections_rank_floor_is_relative_to_their_dimensions():
    """At the demo budget (256 samples, 128-dimensional projections) the floor is 5% of 128 = 6.4: the failing SwAV
    evidence run's 3.2 trips it, the lowest healthy demo run's 10.2 does not; at the smoke budget (32 dimensions)
    the floor stays the absolute 1.5."""
    demo = compose(["method=simclr", "budget=demo"])
    row = {"epoch": 0, "loss": 5.0, "health_rank_backbone": 40.0}
    (found,) = check_guardrails([dict(row, health_rank_projection=3.2)], demo)
    assert found["check"] == "low_rank" and "projections 3.20 < 6.4 (of at most 128)" in found["message"]
    assert check_guardrails([dict(row, health_rank_projection=10.2)], demo) == []
    assert check_guardrails([dict(row, health_rank_projection=3.2)], compose([
        "method=simclr", "budget=demo", "health.min_rank_fraction=0"])) == []
    smoke_cfg = compose(["method=simclr", "budget=smoke"])
    assert check_guardrails([dict(row, health_rank_projection=1.6)], smoke_cfg) == []
    assert check_guardrails([dict(row, health_rank_projection=1.4)], smoke_cfg)[0]["check"] == "low_rank"
    with pytest.raises(ConfigError, match="health.min_rank_fraction"):
        compose(["budget=smoke", "health.min_rank_fraction=1.5"])


def test_a_non_finite_loss_names_the_first_non_finite_tensor():
    cfg = compose(["method=swav", "budget=smoke"])
    from ssl_bench.methods.base import build_method

    model = SSLModel(SmallConvNet(4), ProjectionHead(32, 16, 8), build_method(cfg, 8))
    watch = NonFiniteWatch(model)
    crops = [torch.rand(2, 3, 16, 16)]
    model.project(crops)
    assert watch.culprit({"crops": crops}).startswith("the objective itself")
    watch.clear()
    assert "input crops" in watch.culprit({"crops": [torch.full((2, 3, 16, 16), float("nan"))]})
    with torch.no_grad():
        model.head.net[0].weight[0, 0] = float("inf")
    model.project(crops)
    assert watch.culprit({"crops": crops}) == "the projections (head output)"
    model.method.prototypes(torch.full((2, 8), float("nan")))
    watch.remove()


@pytest.mark.parametrize("method", ["swav", "simclr", "deepclusterv2", "selav2", "carl"])
def test_health_and_probe_and_guardrails_do_not_change_training(tmp_path, method):
    """The same smoke run with everything on and everything off: bit-identical weights, equal per-epoch losses."""
    on = smoke(tmp_path / "on", f"method={method}", "train.epochs=3")
    off = smoke(tmp_path / "off", f"method={method}", "train.epochs=3", *OFF)
    run_experiment(on)
    run_experiment(off)
    run_on, run_off = tmp_path / "on" / run_id(on), tmp_path / "off" / run_id(off)
    a, b = _weights(run_on), _weights(run_off)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_on, rows_off = results.read_metrics(run_on), results.read_metrics(run_off)
    assert [r["loss"] for r in rows_on] == [r["loss"] for r in rows_off]
    assert [r["monitor_knn_top1"] for r in rows_on] == [r["monitor_knn_top1"] for r in rows_off]
    keys = {"health_rank_backbone", "health_rank_projection", "health_alignment", "health_uniformity", "health_std",
            "online_linear_top1"}
    assert keys <= set(rows_on[0]) and not keys & set(rows_off[0])
    assert read_summary(run_on)["metrics"]["final_health_rank_backbone"] == rows_on[-1]["health_rank_backbone"]
    # In results.load_epochs (and so in every figure) as columns; the same configuration either way.
    df = results.load_epochs(tmp_path / "on")
    assert keys <= set(df.columns)
    assert configuration_id(read_config(run_on)) == configuration_id(read_config(run_off))
    if method != "swav":
        return
    # The figure: one line per configuration, in plot's report.
    from ssl_bench.analysis.plot import plot

    written = plot(tmp_path / "on", out=tmp_path / "figures")
    assert tmp_path / "figures" / "health_smoke.png" in written
    assert "### Health per epoch" in (tmp_path / "figures" / "report.md").read_text()


def test_a_shipped_record_keeps_its_configuration_id():
    """health.* and train.guardrails are new keys at their defaults: shipped records keep their ids and folders."""
    runs = sorted(p for p in (REFERENCE_DIR / "runs").iterdir() if (p / "summary.json").is_file())
    assert runs
    for run in runs[:5]:
        assert configuration_id(read_config(run)) == read_summary(run)["configuration_id"]
    assert configuration_id(compose(["method=swav", "dataset=fashion_mnist", "budget=demo"])) == \
        configuration_id(compose(["method=swav", "dataset=fashion_mnist", "budget=demo", "health.samples=64",
                                  "train.guardrails=stop", "health.linear_probe=false"]))


def test_carl_without_its_kl_term_trips_a_guardrail_and_stop_stops(tmp_path, capsys):
    no_kl = ["method=carl", "method.lambda_start=0", "method.lambda_end=0", "method.lambda_epochs=0",
             "method.num_prototypes=100", "train.epochs=3"]
    cfg = smoke(tmp_path / "warn", *no_kl)
    summary = run_experiment(cfg)
    # At the smoke budget the codes sit at ln(K) (uniform); at the demo budget they collapse onto one prototype.
    checks = [g["check"] for g in summary["guardrails"]]
    assert checks and set(checks) <= {"uniform_codes", "few_prototypes", "low_rank"}, summary["guardrails"]
    assert f"guardrail {checks[0]}" in capsys.readouterr().out
    rows = results.read_metrics(tmp_path / "warn" / run_id(cfg))
    assert [g["check"] for r in rows for g in r.get("guardrails", [])] == checks
    # the evidence tables replay guardrails on older records: the replay fires what training fired, when it fired
    assert replay_guardrails(tmp_path / "warn" / run_id(cfg)) == summary["guardrails"]
    with pytest.raises(TrainingStopped, match=f"guardrail {checks[0]} after epoch"):
        run_experiment(smoke(tmp_path / "stop", *no_kl, "train.guardrails=stop"))


def test_bad_guardrail_and_health_values_are_one_line():
    with pytest.raises(ConfigError, match="valid choices: warn, stop, off"):
        compose(["budget=smoke", "train.guardrails=loud"])
    with pytest.raises(ConfigError, match="health.samples"):
        compose(["budget=smoke", "health.samples=-1"])


def test_compare_tables_gain_the_final_effective_rank(tmp_path):
    from ssl_bench.analysis import compare as cmp
    from ssl_bench.config.cli import guarded

    argv = ["methods=[swav,simclr]", "budget=smoke", f"results={tmp_path}", "eval.random_baseline=false"]
    assert guarded(cmp.main, argv) == 0
    out = tmp_path / "compare" / "compare-fashion_mnist-smoke-eval.random_baseline=false"
    assert "final effective rank" in (out / "table.md").read_text()
    table = pd.read_csv(out / "table.csv")
    assert (table["final_rank_mean"] >= 1).all()


def test_swav_with_an_early_queue_unfrozen_prototypes_and_a_huge_lr_trips_low_rank(tmp_path):
    broken = ["method=swav", "method.queue_start_epoch=0", "method.queue_length=64", "method.freeze_prototypes_iters=0",
              "optim.lr=5", "train.epochs=2"]
    summary = run_experiment(smoke(tmp_path, *broken))
    low = [g for g in summary["guardrails"] if g["check"] == "low_rank"]
    assert low and "projections" in low[0]["message"] and "optim.lr=5" in low[0]["message"], summary["guardrails"]


def test_a_diverging_run_names_the_first_non_finite_tensor(tmp_path):
    with pytest.raises(TrainingStopped, match="loss became nan .*first non-finite: the backbone features"):
        run_experiment(smoke(tmp_path, "optim.lr=1e38", "train.epochs=2"))


def test_on_the_shipped_records_guardrails_fire_on_the_known_collapses_only():
    """Today's thresholds replayed on every shipped demo record: they fire on CARL's partial collapses (no KL term,
    a constant KL weight, 1000 prototypes: a few prototypes in use, results/claims.md claims 7-10) and on no other
    configuration, the five methods at their defaults included."""
    table = guardrail_table([REFERENCE_DIR / "runs"])
    rows = {r.split(" | ")[0].strip("| "): r.split(" | ")[2] for r in table.splitlines()[2:]}
    firing = {label for label, n in rows.items() if not n.startswith("0 of")}
    assert firing == {"CARL, 1000 prototypes", "CARL, batch 256, 1000 prototypes", "CARL, batch 32, 1000 prototypes",
                      "CARL, constant lambda", "CARL, final lambda 0.0, constant lambda, initial lambda 0.0"}, table
    for label in ("SwAV", "SimCLR", "DeepCluster-v2", "SeLa-v2", "CARL"):
        assert rows[label].startswith("0 of"), table
