"""compare and plot: the table and every figure from a small set of written records, the budget check, resume
of an interrupted comparison, and one real compare on the smoke budget."""

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from ssl_bench.analysis import compare as cmp
from ssl_bench.analysis import plot
from ssl_bench.config.cli import guarded
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.records.budget import budget_diff, budget_fingerprint, budget_items
from ssl_bench.records.identity import configuration_id, run_id
from ssl_bench.records.io import write_json, write_metrics
from ssl_bench.training.loop import TrainingStopped

# Known final kNN accuracies: (variant, method, seed) -> value.
ACC = {("2 global crops", "swav", 0): 60.0, ("2 global crops", "swav", 1): 62.0,
       ("2 global crops", "simclr", 0): 55.0, ("2 global crops", "simclr", 1): 57.0,
       ("2 global + local crops", "swav", 0): 70.0, ("2 global + local crops", "swav", 1): 74.0,
       ("2 global + local crops", "simclr", 0): 65.0, ("2 global + local crops", "simclr", 1): 66.0}


def fake_record(cfg, knn: float, wall: float = 100.0) -> Path:
    """A finished run record (config.yaml, metrics.jsonl, summary.json) as run_experiment writes it."""
    run = Path(cfg.output_dir) / run_id(cfg)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    n = cfg.train.epochs
    images = 64 * n
    write_metrics(run, [{"epoch": e, "step": 4 * (e + 1), "loss": 5.0 - e, "monitor_knn_top1": knn - 2 * (n - 1 - e),
                         "wall_s": wall * (e + 1) / n} for e in range(n)])
    write_json(run / "summary.json", {
        "run_id": run_id(cfg), "configuration_id": configuration_id(cfg), "status": "complete",
        "method": cfg.method.name, "dataset": cfg.dataset.name, "budget": cfg.choices.budget,
        "backbone": cfg.backbone.name, "seed": cfg.seed, "epochs": n,
        "batch_size": cfg.data.batch_size, "overrides": list(cfg.overrides), "tags": {},
        "metrics": {"knn_top1": knn, "knn_top1_k20": knn, "random_knn_top1": 20.0, "random_knn_top1_k20": 20.0,
                    "monitor_knn_top1": knn,
                    "linear": {"top1": knn + 5, "settings": {}}, "random": {"linear": {"top1": 25.0}}},
        "cost": {"wall_s": wall, "train_s": wall * 0.8, "images_seen": images, "images_per_s": images / (wall * 0.8),
                 "peak_mem_mb": 500.0, "num_processes": 1, "device": "cpu"}})
    return run


def no_training(*_a, **_k):
    raise AssertionError("run_experiment must not be called: every record exists")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The multi-crop study (2 methods x 2 seeds x 2 variants, smoke budget) as written records; walls differ."""
    root = tmp_path_factory.mktemp("results")
    plan = cmp.parse(["study=multicrop", "methods=[swav,simclr]", "seeds=[0,1]", "budget=smoke", f"results={root}"])
    for r in plan.runs:
        wall = 100.0 if r.variant.startswith("2 global crops") else 150.0
        fake_record(r.cfg, ACC[(r.variant, r.method, r.seed)], wall + r.seed)
    return root, plan


@pytest.fixture
def multicrop_records(written, tmp_path, monkeypatch):
    """The written study's plan, writing its table into tmp_path (the records are shared, read only)."""
    monkeypatch.setattr(cmp.running, "run_experiment", no_training)
    return dataclasses.replace(written[1], out_dir=tmp_path / "compare" / written[1].name)


def test_budget_fingerprint_ignores_method_seed_and_storage(written):
    by = {(r.variant, r.method, r.seed): r.cfg for r in written[1].runs}
    a, b = by[("2 global crops", "swav", 0)], by[("2 global crops", "simclr", 1)].copy()
    b.output_dir, b.train.num_threads, b.train.checkpoint_every = "/elsewhere", 1, 5
    c = by[("2 global + local crops", "swav", 0)]
    assert budget_fingerprint(a) == budget_fingerprint(b) != budget_fingerprint(c)
    assert budget_diff(budget_items(a), budget_items(c)) == {"crops.local.n": (0, 2)}
    assert not any(k.startswith(("method.", "seed", "choices", "overrides")) for k in budget_items(a))


def test_table_from_records(multicrop_records, tmp_path):
    table = cmp.compare(multicrop_records)
    t = table.set_index(["variant", "method"])
    row = t.loc[("2 global + local crops", "swav")]
    assert row["knn_top1_mean"] == pytest.approx(72.0)
    assert row["knn_top1_sd"] == pytest.approx(math.sqrt(8.0))  # sample sd of 70, 74
    # 95% t-interval, 1 degree of freedom: t = 12.706, half-width 12.706 * sqrt(8) / sqrt(2) = 25.41.
    assert row["knn_top1_ci_lo"] == pytest.approx(72.0 - 25.412, abs=1e-2)
    assert row["n_seeds"] == 2 and row["knn_top1_n"] == 2 and row["crops"] == "2x28+2x14"
    assert t.loc[("2 global crops", "simclr"), "knn_top1_mean"] == pytest.approx(56.0)
    assert t.loc[("2 global crops", "swav"), "crops"] == "2x28"
    # The study's baseline: gain of the local crops per method, paired by seed: swav 70-60, 74-62 -> +11 (t = 11,
    # df 1, p = 1 - 2/pi atan 11 = 0.0578); simclr 65-55, 66-57 -> +9.5 (t = 19, p = 0.0335). The family's rule
    # (decisions.RULE) adjusts each by the other comparison's larger p (its TOST's, near 1 at +9.5 against ±0.5): 2 x
    # its own p, 0.1156 and 0.0670, so neither is significant at n=2.
    assert row["knn_top1_vs_baseline_diff"] == pytest.approx(11.0)
    assert row["knn_top1_vs_baseline_p"] == pytest.approx(1 - 2 / math.pi * math.atan(11.0), abs=1e-6)
    simclr = t.loc[("2 global + local crops", "simclr")]
    assert simclr["knn_top1_vs_baseline_p_adjusted"] == pytest.approx(2 * (1 - 2 / math.pi * math.atan(19.0)),
                                                                      abs=1e-6)
    assert row["knn_top1_vs_baseline_p_adjusted"] == pytest.approx(2 * (1 - 2 / math.pi * math.atan(11.0)), abs=1e-6)
    assert not row["knn_top1_vs_baseline_significant"]
    # Against the reference method (swav) within each variant: simclr 60->55, 62->57: -5 both seeds (sd 0).
    assert t.loc[("2 global crops", "simclr"), "knn_top1_vs_ref_diff"] == pytest.approx(-5.0)
    assert {"wall_s_mean", "images_per_s_mean", "peak_mem_mb_mean", "budget_fp"} <= set(table.columns)
    assert "rank" not in table  # no ranking by noise: the suite's order
    # +11.0 at n=2 (sd 1.41) is neither significant after Holm nor within +-0.5: the seeds that would decide it.
    assert row["knn_top1_vs_baseline_decision"] == "underpowered"
    assert row["knn_top1_vs_baseline_n_needed"] >= 3 and row["knn_top1_vs_baseline_mde"] > 11
    out = multicrop_records.out_dir
    assert out.name == "multicrop-fashion_mnist-smoke"
    md = (out / "table.md").read_text()
    assert "77.0 ± 2.8 (n=2; 95% CI" in md and "linear probe on frozen features" in md  # the linear probe
    assert "72.0 ± 2.8 (n=2; 95% CI 46.6–97.4)" in md and "+11.0 (n=2; 95% CI" in md
    assert "Budget 'smoke' (fingerprints" in md and "weighted kNN (k=20" in md
    assert "underpowered at ±0.5 (n=2" in md and "would decide ±0.5" in md and "Warning: n < 3" in md
    assert "| SwAV |" in md
    assert "An interval covers what changes with the seed" in md and "TOST" in md
    csv = pd.read_csv(out / "table.csv")
    assert len(csv) == 4 and set(pd.read_csv(out / "runs.csv")["run_id"]) == {r.run_id for r in multicrop_records.runs}


def test_match_wall_reads_each_run_at_the_common_time(multicrop_records):
    multicrop_records.match = "wall"
    t = cmp.compare(multicrop_records).set_index(["variant", "method"])
    # The shortest run lasts 100 s (2 global crops, seed 0); the 150 s runs are read after epoch 1 of 2 (75 s),
    # where the fake monitor is final - 2.
    assert t.loc[("2 global + local crops", "swav"), "matched_top1_mean"] == pytest.approx(70.0)
    assert t.loc[("2 global + local crops", "swav"), "matched_epoch_mean"] == 1
    assert t.loc[("2 global crops", "swav"), "matched_top1_mean"] == pytest.approx(60.0)  # 60, 62 - 2
    assert "at 100 s wall-clock" in (multicrop_records.out_dir / "table.md").read_text()
    # Every run saw the same images (shared loader): match=images reads each run after its last epoch.
    multicrop_records.match = "images"
    t = cmp.compare(multicrop_records).set_index(["variant", "method"])
    assert t.loc[("2 global + local crops", "swav"), "matched_top1_mean"] == pytest.approx(72.0)
    assert (t["matched_epoch_mean"] == 2).all()


def test_every_figure_and_the_report(written, monkeypatch):
    root, plan = written
    monkeypatch.setattr(cmp.running, "run_experiment", no_training)
    cmp.compare(plan)
    tmp_path = root
    # An epochs study on top (train.epochs 1 and 2; 2 is the smoke budget's own, so those records exist).
    for m, acc in (("swav", 50.0), ("simclr", 45.0)):
        cfg = compose(["budget=smoke", f"method={m}", "train.epochs=1", f"output_dir={tmp_path / 'runs'}"])
        for s in (0, 1):
            cfg.seed = s
            fake_record(cfg, acc + s)
    written = plot.plot(tmp_path)
    names = {p.name for p in written}
    for stem in ("accuracy_smoke", "accuracy_vs_epochs_smoke", "accuracy_vs_wall_smoke", "multicrop_smoke",
                 "accuracy_vs_train_epochs_smoke"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names, stem
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 10_000
    report = (tmp_path / "figures" / "report.md").read_text()
    # Same numbers as the table: multi-crop swav 72.0 ± 2.8 vs 61.0 ± 1.4 (n=2 each); one row per configuration,
    # labelled in words by what differs from the budget.
    assert "72.0 ± 2.8 (n=2" in report and "61.0 ± 1.4 (n=2" in report
    assert "| SwAV, 1 epoch |" in report and "| SwAV, no local crops |" in report and "| SwAV |" in report
    assert "fingerprint" not in (tmp_path / "figures" / "accuracy_smoke.svg").read_text()
    # Regenerating rewrites the same bytes (SVG clip-path ids are random unless salted), so shipped figures diff only
    # when their records do.
    figs = {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("accuracy_smoke.*")}
    plot.plot(tmp_path)
    assert {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("accuracy_smoke.*")} == figs
    # Study mode: only the study's runs, labelled with its variant names, into figures/<study>/.
    written = plot.plot(tmp_path, study="multicrop")
    assert (tmp_path / "figures" / "multicrop" / "multicrop_smoke.png").exists()
    report = (tmp_path / "figures" / "multicrop" / "report.md").read_text()
    assert "SwAV, 2 global + local crops" in report and "1 epoch" not in report


def test_mismatched_budgets_are_refused_naming_the_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cmp.running, "run_experiment", no_training)
    base = ["methods=[swav,simclr]", "budget=smoke", f"results={tmp_path}"]
    # Before any work: a per-method override that changes the budget.
    code = guarded(cmp.main, [*base, "simclr:data.batch_size=32"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "different budgets" in err and "data.batch_size (swav s0: 16, simclr s0: 32)" in err
    assert not (tmp_path / "compare").exists()
    # From the records: a record whose saved config has another learning rate.
    plan = cmp.parse(base)
    for r in plan.runs:
        fake_record(r.cfg, 50.0)
    cfg = OmegaConf.load(plan.runs[1].run_dir / "config.yaml")
    cfg.optim.lr = 0.1
    (plan.runs[1].run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError, match=r"optim\.lr \(swav s0: 0\.05, simclr s0: 0\.1\)"):
        cmp.compare(plan)
    # Unless asked to: the table is written and names both fingerprints.
    plan.allow_mixed = True
    table = cmp.compare(plan)
    assert len(set(table["budget_fp"])) == 2 and "Mixed budgets" in (plan.out_dir / "table.md").read_text()


def test_bad_input_exits_2_before_work(tmp_path, capsys):
    for args, needle in ((["methods=[swav,nope]"], "unknown method 'nope'"), (["study=nope"], "unknown study 'nope'"),
                         (["match=flops"], "unknown match 'flops'"), (["method=swav"], "use methods=[..]"),
                         (["methods=[swav,simclr]", "method.epsilon=0.1"], "method simclr: unknown key")):
        assert guarded(cmp.main, ["budget=smoke", f"results={tmp_path}", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_interrupted_compare_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    calls: list[tuple[str, bool]] = []
    interrupt = [True]

    def interrupted_after_first(cfg, **_):
        calls.append((run_id(cfg), bool(cfg.resume)))
        if len(calls) == 2 and interrupt and interrupt.pop():  # the 2nd run stops after a checkpoint
            (Path(cfg.output_dir) / run_id(cfg) / "checkpoint").mkdir(parents=True)
            raise TrainingStopped("interrupted at epoch 1, batch 3; checkpoint saved", 130)
        return fake_record(cfg, 50.0)

    monkeypatch.setattr(cmp.running, "run_experiment", interrupted_after_first)
    argv = ["methods=[swav,simclr]", "seeds=[0,1]", "budget=smoke", f"results={tmp_path}"]
    plan = cmp.parse(argv)
    ids = [r.run_id for r in plan.runs]
    with pytest.raises(TrainingStopped):
        cmp.compare(plan)
    assert [c[0] for c in calls] == ids[:2]
    calls.clear()
    cmp.compare(cmp.parse(argv))
    # Run 1 is reused, run 2 resumed from its checkpoint, runs 3-4 trained.
    assert calls == [(ids[1], True), (ids[2], False), (ids[3], False)]
    calls.clear()
    cmp.compare(cmp.parse(argv))
    assert calls == []


def test_real_compare_and_plot_on_the_smoke_budget(tmp_path):
    argv = ["methods=[swav,simclr]", "budget=smoke", f"results={tmp_path}", "eval.random_baseline=false"]
    assert guarded(cmp.main, argv) == 0
    table = pd.read_csv(tmp_path / "compare" / "compare-fashion_mnist-smoke-eval.random_baseline=false" / "table.csv")
    assert list(table["method"]) == ["swav", "simclr"] and table["knn_top1_mean"].between(0, 100).all()
    assert table["budget_fp"].nunique() == 1 and (table["wall_s_mean"] > 0).all()
    assert guarded(plot.main, [f"results={tmp_path}"]) == 0
    assert (tmp_path / "figures" / "accuracy_smoke.png").exists()
    assert (tmp_path / "figures" / "accuracy_vs_wall_smoke.svg").exists()


def test_typed_plan_equals_the_command_line(tmp_path):
    """compare.plan (what api, claims and reference call) and the command line give the same runs, byte for byte."""
    argv = ["study=multicrop", "methods=[swav,simclr]", "seeds=[0,1]", "budget=smoke", "swav:method.epsilon=0.04",
            f"results={tmp_path}"]
    typed = cmp.plan(study="multicrop", methods=["swav", "simclr"], seeds=[0, 1], overrides=["budget=smoke"],
                     per_method={"swav": ["method.epsilon=0.04"]}, results=tmp_path)
    parsed = cmp.parse(argv)
    assert (typed.name, typed.out_dir, typed.overrides) == (parsed.name, parsed.out_dir, parsed.overrides)
    assert [OmegaConf.to_yaml(r.cfg) for r in typed.runs] == [OmegaConf.to_yaml(r.cfg) for r in parsed.runs]
    with pytest.raises(ConfigError, match="compare sets method and seed itself"):
        cmp.plan(overrides=["seed=3"], results=tmp_path)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        cmp.plan(per_method={"nope": ["method.epsilon=0.04"]}, results=tmp_path)
