"""The comparison table decided by ssl_bench.analysis.decisions (issue 30): one family-wise rule (an uncorrected TOST
p is not equivalence), leave-one-seed-out fragility marked in table.md, the seed + test-image interval from kept
predictions, unshared seeds listed, and outcome counts computed from the verdicts. Constructed records, no
training."""

import math

import numpy as np
import pandas as pd
import pytest
from test_compare_plot import fake_record

from ssl_bench.analysis import compare as cmp
from ssl_bench.analysis import decisions


def _table(tmp_path, monkeypatch, values: dict[str, dict[int, float]], seeds=(0, 1, 2, 3), predictions=None):
    """Records with the given kNN top-1 per method and seed (a seed left out has no record), then the table:
    (table.csv as a DataFrame indexed by method, table.md, the plan). ``predictions``: (method, seed) -> per-image
    correctness, written as predictions.npz."""
    monkeypatch.setattr(cmp.running, "run_experiment", lambda *a, **k: pytest.fail("must not train"))
    plan = cmp.parse([f"methods=[{','.join(values)}]", f"seeds=[{','.join(map(str, seeds))}]", "budget=smoke",
                      f"results={tmp_path}"])
    for r in plan.runs:
        if r.seed in values[r.method]:
            run = fake_record(r.cfg, values[r.method][r.seed])
            if predictions and (r.method, r.seed) in predictions:
                right = np.asarray(predictions[(r.method, r.seed)], dtype=bool)
                labels = np.zeros((1, right.size), np.uint8)
                pred = np.where(right, 0, 1).astype(np.uint8)[None]
                np.savez(run / "predictions.npz", seeds=np.array([0], np.int32),
                         index=np.arange(right.size, dtype=np.uint16)[None], labels=labels, knn=pred, linear=pred,
                         knn_k=np.int32(20))
    cmp.compare(plan, train=False, verbose=False, require_all=False)
    return (pd.read_csv(plan.out_dir / "table.csv").set_index("method"), (plan.out_dir / "table.md").read_text(),
            plan)


def _row(md: str, name: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {name} "))


def test_an_uncorrected_tost_is_not_equivalence_under_the_rule(tmp_path, monkeypatch):
    # SimCLR - SwAV: 0.4, -0.4, 0.3, -0.3, 0 (mean 0, sd 0.35, n 5): TOST p = 0.017 uncorrected, which the old rule
    # called equivalent; the other three differ by about 5 points (their TOST p near 1), so the family's rule adjusts
    # it to 4 x 0.017 = 0.07: underpowered, not equivalent.
    base = {s: 80.0 + 0.1 * s for s in range(5)}
    shift = {"simclr": [0.4, -0.4, 0.3, -0.3, 0.0], "deepclusterv2": [5.0, 5.2, 4.9, 5.1, 5.3],
             "selav2": [-5.0, -5.2, -4.9, -5.1, -5.3], "carl": [4.0, 4.3, 4.1, 3.9, 4.2]}
    values = {"swav": base, **{m: {s: base[s] + d[s] for s in range(5)} for m, d in shift.items()}}
    csv, md, _ = _table(tmp_path, monkeypatch, values, seeds=range(5))
    simclr = csv.loc["simclr"]
    assert simclr["knn_top1_vs_ref_p_tost"] < 0.05 <= simclr["knn_top1_vs_ref_p_tost_adjusted"]
    assert simclr["knn_top1_vs_ref_p_tost_adjusted"] == pytest.approx(4 * simclr["knn_top1_vs_ref_p_tost"], rel=0.01)
    assert simclr["knn_top1_vs_ref_decision"] == "underpowered"
    assert "equivalent" not in _row(md, "SimCLR").split("|")[5]  # the kNN verdict cell
    assert decisions.RULE in md  # the rule itself, generated
    assert "of the 8 comparisons against SwAV, 4 better, 2 worse, 0 equivalent, 2 underpowered" in md


def test_fragile_verdict_and_outcome_count_follow_the_records(tmp_path, monkeypatch):
    # SimCLR - SwAV: 1.0, 1.2, 1.1, 1.05: better (one comparison: its own p).
    base = {s: 80.0 for s in range(4)}
    values = {"swav": base, "simclr": {0: 81.0, 1: 81.2, 2: 81.1, 3: 81.05}}
    csv, md, plan = _table(tmp_path, monkeypatch, values)
    assert csv.loc["simclr", "knn_top1_vs_ref_decision"] == "better"
    assert "of the 2 comparisons against SwAV, 2 better, 0 worse, 0 equivalent, 0 underpowered; 0 fragile" in md
    # One record changes (seed 3 now +5.0): not significant with it, better without it: fragile, and the caption's
    # outcome count changes with the verdicts.
    fake_record(next(r.cfg for r in plan.runs if (r.method, r.seed) == ("simclr", 3)), 85.0)
    csv, md, _ = _table(tmp_path, monkeypatch, {**values, "simclr": {**values["simclr"], 3: 85.0}})
    assert csv.loc["simclr", "knn_top1_vs_ref_decision"] == "underpowered"
    assert float(csv.loc["simclr", "knn_top1_vs_ref_fragile_seeds"]) == 3  # the seeds, space-separated
    assert "fragile: without seed 3 it is better" in _row(md, "SimCLR")
    assert "of the 2 comparisons against SwAV, 0 better, 0 worse, 0 equivalent, 2 underpowered; 2 fragile" in md


def test_unshared_seeds_are_listed(tmp_path, monkeypatch):
    values = {"swav": {0: 80.0, 1: 80.5, 2: 79.5, 3: 80.2}, "simclr": {0: 81.0, 1: 81.3, 2: 80.7}}
    csv, md, _ = _table(tmp_path, monkeypatch, values)
    assert csv.loc["simclr", "knn_top1_vs_ref_n"] == 3
    assert csv.loc["simclr", "knn_top1_vs_ref_unpaired"] == "seed 3 (reference only)"
    assert "n = 3 pairs (seeds 0, 1, 2); unpaired: seed 3 (reference only)" in _row(md, "SimCLR")


def test_the_test_set_widens_the_interval_where_predictions_are_kept(tmp_path, monkeypatch):
    # 200 test images; SwAV right on the first 140 and one more per seed, SimCLR also on images 140-159 and, on even
    # seeds, one more: per seed +10 or +10.5 points (the seed-only interval is narrow), all from the same 20 images
    # (the fixed test set's sampling is most of the noise).
    n = 200
    preds, values = {}, {"swav": {}, "simclr": {}}
    for s in range(4):
        ref = np.zeros(n, bool)
        ref[:140] = True
        ref[140 + s] = True
        met = ref.copy()
        met[140:160] = True
        if s % 2 == 0:
            met[160 + s] = True
        preds[("swav", s)], preds[("simclr", s)] = ref, met
        values["swav"][s], values["simclr"][s] = 100 * ref.mean(), 100 * met.mean()
    csv, md, _ = _table(tmp_path, monkeypatch, values, predictions=preds)
    r = csv.loc["simclr"]
    seed_width = r["knn_top1_vs_ref_ci_hi"] - r["knn_top1_vs_ref_ci_lo"]
    boot_width = r["knn_top1_vs_ref_boot_ci_hi"] - r["knn_top1_vs_ref_boot_ci_lo"]
    assert math.isfinite(boot_width) and boot_width > 2 * seed_width
    assert r["knn_top1_vs_ref_boot_mean"] == pytest.approx(r["knn_top1_vs_ref_diff"])
    assert r["knn_top1_vs_ref_boot_share_test"] > 0.5
    assert "(n=4 seeds x 200 images; 95% CI" in _row(md, "SimCLR")
    assert "8 of 8 records keep per-test-image predictions" in md and "Variance split" in md
    # Regenerated, the interval is byte-equal (fixed rng seed).
    again, md2, _ = _table(tmp_path, monkeypatch, values, predictions=preds)
    assert md2 == md
