"""Results you can trust: run identity (configuration, id, readable names, old records), statistics on hand-computed
inputs, labels in words, the record API, the side-by-side with the shipped reference, and the regeneration of every
shipped table from the shipped records."""

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from ssl_bench import reference
from ssl_bench.analysis import against_reference, decisions
from ssl_bench.analysis.report import label, t_interval
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.records import io as results
from ssl_bench.records.identity import configuration, configuration_id, differences, run_name
from ssl_bench.records.io import write_json

BASE = ["method=swav", "dataset=fashion_mnist", "budget=smoke"]


def record(root: Path, overrides: list[str], knn: float, seed: int = 0, tags: dict | None = None,
           first_k: int = 20) -> Path:
    """A finished record as run_experiment writes it (config.yaml + summary.json), named by its run name."""
    cfg = compose([*BASE, *overrides, f"seed={seed}", f"output_dir={root}"])
    run = root / run_name(cfg)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    ks = {f"knn_top1_k{k}": knn + (k - 20) / 10 for k in (5, 20)}
    write_json(run / "summary.json", {
        "run_id": run.name, "method": "swav", "dataset": "fashion_mnist", "budget": "smoke", "seed": seed,
        "tags": tags or {}, "metrics": {"knn_top1": ks[f"knn_top1_k{first_k}"], **ks,
                                        "knn": {"top1": ks[f"knn_top1_k{first_k}"], "top1_k20": ks["knn_top1_k20"]},
                                        "linear": {"top1": knn + 4}},
        "cost": {"wall_s": 10.0}})
    return run


# -- identity ---------------------------------------------------------------------------------------
def test_configuration_leaves_out_seed_and_keys_that_cannot_change_the_result():
    a = compose([*BASE, "seed=0"])
    b = compose([*BASE, "seed=3", "train.num_threads=2", "data.num_workers=4", "output_dir=/x",
                 "train.progress=false", "eval.splits_dir=/y", "print_config=true"])
    with open_dict(b):
        b.tags.sweep = "s"
    c = compose([*BASE, "method.num_prototypes=10"])
    assert configuration(a) == configuration(b) and configuration_id(a) == configuration_id(b)
    assert configuration_id(a) != configuration_id(c)
    assert differences(c) == {"method.num_prototypes": (16, 10)} and differences(a) == {}
    assert "seed" not in configuration(a) and not any(k.startswith(("choices", "overrides")) for k in configuration(a))


def test_a_record_written_before_a_key_existed_is_the_same_configuration():
    cfg = compose(BASE)
    old = OmegaConf.to_container(cfg)
    for key in ("classes", "streaming", "shuffle_buffer", "num_examples"):  # keys added after such a record
        del old["dataset"][key]
    old["train"]["a_key_the_schema_dropped"] = 5  # and one the schema no longer has
    assert configuration(old) == configuration(cfg) and configuration_id(old) == configuration_id(cfg)
    # A key at a non-default value is part of the configuration.
    assert configuration_id(compose([*BASE, "dataset.shuffle_buffer=7"])) != configuration_id(cfg)


def test_methods_with_the_same_settings_have_different_ids():
    a, b = compose(["method=deepclusterv2", "budget=smoke"]), compose(["method=selav2", "budget=smoke"])
    assert configuration_id(a) != configuration_id(b)


def test_run_folders_have_readable_names():
    cfg = compose([*BASE, "method.num_prototypes=10", "method.sinkhorn_iterations=1", "seed=2"])
    name = run_name(cfg)
    assert name == f"swav-fashion_mnist-smoke-num_prototypes=10,sinkhorn_iterations=1-s2-{configuration_id(cfg)}"
    assert run_name(compose([*BASE, "crops.local.n=0"])).startswith("swav-fashion_mnist-smoke-local.n=0-s0-")
    assert run_name(compose(BASE)) == f"swav-fashion_mnist-smoke-s0-{configuration_id(compose(BASE))}"


def test_an_existing_record_is_found_under_its_configuration_and_seed(tmp_path):
    """The words of a folder name may change; its -s<seed>-<configuration id> tail finds it."""
    cfg = compose([*BASE, f"output_dir={tmp_path}"])
    old = tmp_path / f"old-words-s0-{configuration_id(cfg)}"
    old.mkdir()
    assert results.find_run_dir(cfg) == old
    cfg.seed = 1
    assert results.find_run_dir(cfg).name == run_name(cfg)


# -- statistics -------------------------------------------------------------------------------------
def test_t_interval_by_hand():
    s = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
    assert s.lo == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    one = t_interval([5.0, None, float("nan")])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.lo)
    assert t_interval([]).n == 0


def test_paired_test_uses_the_shared_seeds_and_the_family_rule_decides():
    a = {0: 1.0, 1: 2.0, 2: 3.0}
    b = {0: 2.0, 1: 4.0, 2: 6.0, 3: 9.0}  # seed 3 has no partner: listed, not paired
    c = decisions.paired(a, b)  # differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.464, df 2: p = 1 - t / sqrt(t^2 + 2)
    assert c.n == 3 and c.differences == (1.0, 2.0, 3.0) and c.only_method == (3,)
    assert decisions.t_test(c.differences) == pytest.approx(1 - 3.4641016 / math.sqrt(3.4641016**2 + 2), abs=1e-6)
    assert decisions.decide_family({"c": c}, 0.5)["c"].word == "underpowered"
    big = decisions.paired({0: 0, 1: 0, 2: 0}, {0: 5.0, 1: 5.1, 2: 4.9})
    assert decisions.decide_family({"big": big}, 0.5)["big"].text().startswith("better by +5.0")
    one = decisions.paired({0: 1.0}, {0: 2.0})
    assert decisions.decide_family({"one": one}, 0.5)["one"].text() == "no test at n=1"


def test_labels_name_what_differs_in_words():
    assert label("swav", {"method.num_prototypes": 10, "method.sinkhorn_iterations": 1}) == \
        "SwAV, 10 prototypes, 1 Sinkhorn iteration"
    assert label("simclr", {"crops.local.n": 0}) == "SimCLR, no local crops"
    assert label("carl", {}) == "CARL" and label("carl", {}, with_method=False) == "budget as defined"
    assert label("swav", {"method.freeze_prototypes_iters": 5}) == "SwAV, freeze_prototypes_iters=5"


# -- the record API ---------------------------------------------------------------------------------
def test_load_gives_config_columns_labels_and_one_meaning_per_metric(tmp_path):
    record(tmp_path, [], 70.0, seed=0)
    record(tmp_path, [], 72.0, seed=1, first_k=5)  # an old record whose knn_top1 meant k=5
    record(tmp_path, ["method.num_prototypes=10"], 71.0, tags={"sweep": "s", "study": "st", "trial": "0"})
    df = results.load(tmp_path)
    assert len(df) == 3 and {"config.method.num_prototypes", "config.data.batch_size", "configuration",
                             "configuration_id", "metrics.knn_top1", "cost.wall_s", "sweep"} <= set(df.columns)
    assert sorted(df["configuration"]) == ["SwAV", "SwAV", "SwAV, 10 prototypes"]
    assert df.groupby("configuration_id").size().sort_values().tolist() == [1, 2]  # two seeds pooled, one apart
    # knn_top1 is k=20 in every record: the k=5 record's headline is replaced by its k=20 value.
    assert sorted(df["metrics.knn_top1"]) == [70.0, 71.0, 72.0] and set(df["metrics.knn.top1"]) == {70.0, 71.0, 72.0}
    assert len(results.load(tmp_path, sweeps=False)) == 2  # sweep trials on request only
    with pytest.raises(ConfigError, match="no run records"):
        results.load(tmp_path / "nowhere")


def test_a_run_prints_its_numbers_beside_the_shipped_reference(tmp_path):
    ref = tmp_path / "reference"
    for seed, acc in ((0, 70.0), (1, 72.0), (2, 74.0)):
        record(ref / "runs", [], acc, seed=seed)
    cfg = compose([*BASE, "seed=1", f"output_dir={tmp_path / 'runs'}"])
    mine = {"seed": 1, "metrics": {"knn_top1": 73.0, "knn_top1_k20": 73.0, "linear": {"top1": 77.0}}}
    lines = against_reference.reference_lines(cfg, mine, tmp_path / "runs" / "x", reference=ref)
    assert "seeds 0 1 2" in lines[0]
    assert "yours 73.00 | reference, same seed 72.00 (difference +1.00) | reference 72.00 ± 2.00 (n=3;" in lines[1]
    assert "(difference +1.00)" in lines[1] and lines[2].startswith("  linear probe top-1: yours 77.00")
    # Why the same seed can give another number, or that it should not.
    assert lines[3].startswith("  same seed, threads, device, precision, torch, CPU kernels and code as the reference: "
                               "the numbers should be equal")
    threads = compose([*BASE, "seed=1", "train.num_threads=2", f"output_dir={tmp_path / 'runs'}"])
    note = against_reference.reference_lines(threads, mine, tmp_path / "runs" / "x", reference=ref)[3]
    assert note.startswith("  same seed, yet your run and the reference can differ through threads (yours 2, the "
                           "reference's 1: sums are added in another order)")
    # Full precision is one thing whether written None or "no"; another CPU's kernels are named in words.
    other_cpu = {**mine, "precision": "no", "versions": {"kernel": "GenuineIntel AVX2; aten AVX2; mkl auto"}}
    note = against_reference.reference_lines(cfg, other_cpu, tmp_path / "runs" / "x", reference=ref)[3]
    assert "precision" not in note and "CPU kernels (yours GenuineIntel AVX2, the reference's not recorded" in note
    other = compose([*BASE, "method.num_prototypes=10", f"output_dir={tmp_path / 'runs'}"])
    assert against_reference.reference_lines(other, mine, tmp_path / "runs" / "x", reference=ref) == []


def test_old_records_migrate_to_readable_names(tmp_path):
    run = record(tmp_path, ["crops.local.n=0"], 70.0)
    old = run.rename(tmp_path / "swav-fashion_mnist-smoke-s0-deadbeef")
    moved = results.migrate(tmp_path, tmp_path / "new")
    assert moved == [(old, tmp_path / "new" / run.name)]
    assert json.loads((tmp_path / "new" / run.name / "summary.json").read_text())["run_id"] == run.name


# -- the shipped reference ----------------------------------------------------------------------------
@pytest.mark.slow
def test_every_shipped_table_regenerates_exactly_from_the_shipped_records():
    """results/reference/{compare,figures} and results/claims.md: every *.md and *.csv equals what the records
    give today."""
    assert reference.check() == []


def test_shipped_records_pool_only_equal_configurations():
    df = results.load(results.REFERENCE_DIR / "runs")
    for _, g in df.groupby("configuration_id"):
        assert g["configuration"].nunique() == 1 and g["seed"].is_unique
    methods = df[(df["sweep"] == "") & (df["configuration"].isin(["SwAV", "SimCLR", "DeepCluster-v2", "SeLa-v2",
                                                                  "CARL"]))]
    # Every shipped method cell has at least its pilot's 3 seeds; seeds=auto adds the ones its variance asks for.
    assert methods.groupby("configuration").size().min() >= 3


def test_plot_reads_your_runs_not_the_shipped_reference_beside_them(tmp_path):
    from ssl_bench.analysis import plot

    record(tmp_path / "runs", [], 70.0)
    record(tmp_path / "reference" / "runs", [], 75.0)  # same configuration and seed: must not pool with yours
    runs, _ = plot.load_runs(tmp_path)
    assert list(runs["metrics.knn_top1"]) == [70.0]
