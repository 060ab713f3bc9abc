"""benchmarks.recompute, the independent recomputation of the shipped tables, claims and headline from the raw
records (issue 30): on a handful of fake records it flags exactly the shipped cell that was altered (a number, a
verdict word), its family rule's shortcut agrees with the full closed-testing enumeration, and on the shipped
records of this checkout every number and verdict word agrees."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks import recompute

ROOT = Path(__file__).resolve().parents[1]

# kNN top-1 per seed: SimCLR is close to SwAV (undecided on 3 seeds), CARL three points below it on every seed.
KNN = {"swav": [80.0, 81.0, 82.0], "simclr": [80.1, 80.8, 82.3], "carl": [77.0, 77.9, 79.1]}


def _record(runs: Path, method: str, seed: int, knn: float) -> str:
    run_id = f"{method}-toy-demo-s{seed}-{sum(map(ord, method)):08x}"
    (runs / run_id).mkdir(parents=True)
    (runs / run_id / "summary.json").write_text(json.dumps({
        "method": method, "seed": seed, "dataset": "toy", "budget": "demo", "epochs": 1, "batch_size": 8,
        "metrics": {"knn_top1": knn, "knn_top1_k20": knn}, "cost": {"wall_s": 10.0 + seed},
        "overrides": [f"method={method}", f"seed={seed}"],
        "versions": {"git": "abc1234"}}))
    return run_id


def _checkout(tmp: Path) -> Path:
    """A checkout with one study, its records and a table.csv whose cells are computed here (numpy, scipy)."""
    (tmp / "experiments" / "study").mkdir(parents=True)
    (tmp / "experiments" / "study" / "toy.yaml").write_text("methods: [swav, simclr, carl]\nseeds: [0, 1, 2]\n"
                                                             "margin: 0.5\n")
    runs = tmp / "results" / "reference" / "runs"
    rows = []
    ids = {m: [_record(runs, m, s, v) for s, v in enumerate(vals)] for m, vals in KNN.items()}
    ref = np.array(KNN["swav"])
    for m, vals in KNN.items():
        x = np.array(vals)
        row = {"variant": "default", "method": m, "method_name": m.upper(), "run_ids": " ".join(ids[m]),
               "n_seeds": 3, "seeds": "0 1 2", "knn_top1_mean": f"{x.mean():.4f}",
               "knn_top1_sd": f"{x.std(ddof=1):.4f}"}
        if m != "swav":
            d = x - ref
            row.update(knn_top1_vs_ref_diff=f"{d.mean():.4f}",
                       knn_top1_vs_ref_p=f"{stats.ttest_1samp(d, 0.0).pvalue:.4f}",
                       knn_top1_vs_ref_decision="worse" if m == "carl" else "underpowered")
        rows.append(row)
    folder = tmp / "results" / "reference" / "compare" / "toy-toy-demo"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "table.csv", index=False)
    return folder / "table.csv"


def _alter(csv: Path, method: str, column: str, value: str) -> None:
    t = pd.read_csv(csv, dtype=str, keep_default_na=False)
    t.loc[t["method"] == method, column] = value
    t.to_csv(csv, index=False)


def _flagged(root: Path) -> list[tuple[str, str, str]]:
    return [(c.file, c.row, c.column) for c in recompute.run(root).disagreements]


def test_flags_exactly_the_altered_cell(tmp_path: Path) -> None:
    csv = _checkout(tmp_path)
    report = recompute.run(tmp_path)
    assert report.disagreements == []
    assert report.counts()[0] >= 11  # every number of the table was compared
    file = "results/reference/compare/toy-toy-demo/table.csv"

    _alter(csv, "simclr", "knn_top1_mean", "81.1000")  # the shipped 81.0667, off by 0.03: outside the printed 4 dp
    assert _flagged(tmp_path) == [(file, "default / SIMCLR", "knn_top1_mean")]

    _alter(csv, "simclr", "knn_top1_mean", "81.0667")
    _alter(csv, "carl", "knn_top1_vs_ref_decision", "underpowered")  # a verdict word
    assert _flagged(tmp_path) == [(file, "default / CARL", "knn_top1_vs_ref_decision")]


def test_a_changed_record_changes_what_is_recomputed(tmp_path: Path) -> None:
    """The raw record, not the table, is the source: a record's accuracy moved by a point moves the row's mean, sd
    and its comparison against the reference, each flagged."""
    _checkout(tmp_path)
    run = next((tmp_path / "results" / "reference" / "runs").glob("simclr-*-s2-*"))
    summary = json.loads((run / "summary.json").read_text())
    summary["metrics"]["knn_top1"] += 1.0
    summary["metrics"]["knn_top1_k20"] += 1.0
    (run / "summary.json").write_text(json.dumps(summary))
    flagged = {col for _, row, col in _flagged(tmp_path) if row == "default / SIMCLR"}
    assert {"knn_top1_mean", "knn_top1_sd", "knn_top1_vs_ref_diff", "knn_top1_vs_ref_p"} <= flagged


def test_the_family_shortcut_equals_full_closed_testing() -> None:
    rng = random.Random(0)
    for _ in range(200):
        k = rng.randint(1, 6)
        p_diff = [rng.choice([rng.random() ** 3, float("nan")]) if rng.random() < 0.1 else rng.random() ** 3
                  for _ in range(k)]
        p_eq = [rng.random() ** 2 for _ in range(k)]
        full = recompute.closed_testing(p_diff, p_eq, exhaustive_up_to=10)
        short = recompute.closed_testing(p_diff, p_eq, exhaustive_up_to=0)
        for a, b in zip(full[0] + full[1], short[0] + short[1], strict=True):
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_agrees_with_the_shipped_results() -> None:
    report = recompute.run(ROOT)
    assert report.checks, "nothing was checked"
    assert [(c.file, c.row, c.column, c.shipped, c.recomputed) for c in report.disagreements] == []
