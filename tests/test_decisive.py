"""Decisive answers: equivalence (TOST), power (MDE, seeds needed), verdict words, one grouping path (cells) and
refusal of cells that pool records of two programs."""

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from test_compare_plot import fake_record

from ssl_bench.analysis import cells, claims, decisions, plot
from ssl_bench.analysis import compare as cmp
from ssl_bench.config.compose import compose
from ssl_bench.records.io import REFERENCE_DIR, load, record_dirs


def _t2_cdf(t: float) -> float:
    """Student t with 2 degrees of freedom has a closed-form CDF."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


# -- one grouping path ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Records of many configurations at one budget: method.* variants, crop variants, their combination and a
    sweep trial, with known seeds each; the pooled bug would put 3 + 2 SwAV runs (two configurations) in one point."""
    root = tmp_path_factory.mktemp("mixed")
    out = root / "runs"
    plan = {  # overrides -> seeds
        ("method=swav",): (0, 1, 2), ("method=swav", "method.num_prototypes=10"): (0, 1),
        ("method=swav", "crops.local.n=0"): (0, 1, 2), ("method=swav", "crops.local.n=0", "method.num_prototypes=10"):
        (0, 1), ("method=simclr",): (0, 1), ("method=simclr", "crops.local.n=0"): (0, 1),
        ("method=swav", "method.epsilon=0.03", "+tags.sweep=s"): (0,),
    }
    for overrides, seeds in plan.items():
        for s in seeds:
            cfg = compose(["budget=smoke", *overrides, f"seed={s}", f"output_dir={out}"])
            fake_record(cfg, 60.0 + s + len(overrides))
    return root, plan


def test_no_figure_or_table_cell_holds_two_configurations(mixed):
    root, plan = mixed
    runs, _ = plot.load_runs(root, sweeps=True)
    seeds_of = runs.groupby("configuration_id")["seed"].nunique().to_dict()
    sets = cells.varying(runs, "crops.local.n")
    assert len(sets) == 2  # swav / simclr at the budget, and swav with 10 prototypes
    for s in sets:
        assert (s.groupby(["method", "crops"])["configuration_id"].nunique() == 1).all()
    made = plot.by_value(runs, root / "figs", "smoke", "crops.local.n", "multicrop", "crops", "Multi-crop",
                         lambda c: c["crops"]["local"]["n"])
    for _, _, rows in made:
        for _, r in rows.iterrows():
            assert r["stat"].n in (2, 3)  # never 5: one configuration per point
    ns = [r["stat"].n for _, _, rows in made for _, r in rows.iterrows()]
    assert sorted(ns) == [2, 2, 2, 2, 3, 3]
    # The report: every cell's n is at most its configuration's seeds.
    plot.plot(root, sweeps=True)
    report = (root / "figures" / "report.md").read_text()
    assert max(int(n) for n in re.findall(r"\(n=(\d+)[;)]", report)) <= max(seeds_of.values()) == 3
    for _, g in cells.split(cells.assign(runs)):
        assert g["configuration_id"].nunique() == 1


def test_a_stale_record_refuses_its_cell_in_every_table(mixed, tmp_path, monkeypatch, capsys):
    root, _ = mixed
    runs = load(root / "runs")
    victim = Path(runs[(runs["method"] == "simclr") & (runs["differences"].map(len) == 0)]["path"].iloc[0])
    (root / "verification.json").write_text(json.dumps({"records": {victim.name: {
        "status": "stale", "why": "differs in loss (4.19936 vs 4.1998)"}}}))
    try:
        df, lines = cells.usable(cells.assign(runs))
        assert victim.name in lines[0] and "refused" in lines[0]
        assert not df["path"].isin([str(victim)]).any()
        assert (cells.assign(runs).query("cell == @df.cell.iloc[0]")["stale"] == "").all()
        plot.plot(root, sweeps=True, out=tmp_path / "figs")
        assert "refused: cell 'SimCLR'" in capsys.readouterr().err
        assert victim.name in (tmp_path / "figs" / "report.md").read_text()
        monkeypatch.setattr(cmp.running, "run_experiment", lambda *a, **k: pytest.fail("must not train"))
        p = cmp.parse(["methods=[swav,simclr]", "seeds=[0,1]", "budget=smoke", f"results={root}"])
        table = cmp.compare(dataclasses.replace(p, out_dir=tmp_path / "cmp")).set_index("method")
        assert table.loc["simclr", "knn_top1_n"] != table.loc["simclr", "knn_top1_n"]  # NaN: no statistics
        assert victim.name in table.loc["simclr", "refused"]
        assert "Refused cells" in (tmp_path / "cmp" / "table.md").read_text()
    finally:
        (root / "verification.json").unlink()


def test_seeds_auto_trains_what_the_pilot_variance_asks_for(tmp_path, monkeypatch):
    # Pilot seeds 0-2: SimCLR - SwAV differences 1.0, 1.3, 0.7 (sd 0.3) -> seeds_needed(0.3, 0.5) pairs.
    acc = {("swav", 0): 80.0, ("swav", 1): 80.5, ("swav", 2): 79.5, ("simclr", 0): 81.0, ("simclr", 1): 81.8,
           ("simclr", 2): 80.2}
    trained = []

    def fake_train(cfg, *a, **k):
        trained.append((cfg.method.name, cfg.seed))
        fake_record(cfg, acc.get((cfg.method.name, cfg.seed), 80.0 + cfg.seed % 2))

    monkeypatch.setattr(cmp.running, "run_experiment", fake_train)
    plan = cmp.parse(["methods=[swav,simclr]", "seeds=[0,1,2]", "budget=smoke", f"results={tmp_path}"])
    plan = dataclasses.replace(plan, auto=True, max_seeds=8)
    cmp.compare(plan)
    need = decisions.seeds_needed(0.3, 3, 0.5).n  # 0.3: the sd of 1.0, 1.3, 0.7 (kNN; linear is knn + 5), 3 pairs
    assert sorted({s for m, s in trained if m == "swav"}) == list(range(min(need, 8)))
    md = (tmp_path / "compare" / plan.name / "table.md").read_text()
    assert "seeds=auto (planning, before any outcome): a pilot of 3 seeds" in md and f"n = {min(need, 8)}." in md
    with pytest.raises(Exception, match="pilot of at least 2 seeds"):
        cmp.parse(["methods=[swav,simclr]", "seeds=auto", "budget=smoke", f"results={tmp_path}"])


# -- claims: the new verdict words -----------------------------------------------------------------------------
def _cell(variant: str, values: dict[int, float]) -> claims.Cell:
    return claims.Cell(variant, "swav", sorted(values), {s: {"metrics": {"knn_top1": v, "linear": {"top1": v}}}
                                                         for s, v in values.items()})


def test_claim_gain_verdicts():
    """A gain claim is reproduced only when its 95% interval reaches the paper's effect; real but off the paper's
    size is "direction only" (smaller or larger); no number from the paper can only give "direction only"."""
    base = {s: 80.0 + 0.1 * s for s in range(8)}
    worse = {s: v - 1.0 + 0.05 * (s % 2) for s, v in base.items()}  # -0.975 on average, sd 0.027
    cases = [  # (variant values, the paper's effect, the claim's verdict); expect: lower
        (worse, (-1.0, -0.9), claims.REPRODUCED),
        (worse, (-3.0, -2.0), "direction only at this scale, smaller than the paper's -3 to -2"),
        (worse, (-0.5, -0.5), "direction only at this scale, larger than the paper's -0.5"),
        (worse, None, "direction only at this scale (the paper gives no number to compare)"),
        ({s: v + 0.04 * (-1) ** s for s, v in base.items()}, (-1.0, -0.9),
         "not reproduced at this scale (equivalent within ±0.5)"),
        ({s: v + 1.0 + 0.05 * (s % 2) for s, v in base.items()}, (-1.0, -0.9),
         "not reproduced at this scale (the other way)"),
        # lower by 0.1 on every seed: real (significant) and inside the margin: not the paper's effect size
        ({s: v - 0.1 - 0.01 * (s % 2) for s, v in base.items()}, (-1.0, -0.9),
         "direction only at this scale, smaller than the paper's -1 to -0.9"),
    ]
    for vals, paper, expected in cases:
        cells_ = {("a", "swav"): _cell("a", base), ("b", "swav"): _cell("b", vals)}
        out = claims.gain({"baseline": "a", "variants": ["b"], "expect": "lower"}, cells_, "linear.top1", 0.5, paper)
        assert out.verdict == expected, (paper, expected)
    noisy = {("a", "swav"): _cell("a", {0: 80, 1: 80, 2: 80}), ("b", "swav"): _cell("b", {0: 79, 1: 81.5, 2: 79.2})}
    out = claims.gain({"baseline": "a", "variants": ["b"], "expect": "lower"}, noisy, "linear.top1", 0.5)
    assert out.verdict.startswith("underpowered at this scale: n = ") and "would decide ±0.5" in out.verdict


# -- the shipped records ---------------------------------------------------------------------------------------
def test_no_shipped_cell_claims_more_runs_than_its_configuration_has_seeds():
    runs = load(REFERENCE_DIR / "runs")
    most = int(runs.groupby("configuration_id")["seed"].nunique().max())
    files = [*(REFERENCE_DIR / "figures").rglob("*.md"), *(REFERENCE_DIR / "compare").rglob("*.md"),
             REFERENCE_DIR.parent / "claims.md"]
    for f in files:
        found = [int(n) for n in re.findall(r"\(n=(\d+)[;)]", f.read_text())]  # a cell's runs, not "n=9 would decide"
        assert not found or max(found) <= most, f"{f}: a cell with n={max(found)} > {most} seeds of any configuration"
    assert record_dirs(REFERENCE_DIR / "runs")


def test_shipped_summary_table_rows_are_one_configuration_each():
    """In the shipped report every row's seeds are records of its one configuration id (no pooling)."""
    runs = load(REFERENCE_DIR / "runs", sweeps=False)
    per = runs.groupby("configuration_id")["seed"].apply(lambda s: sorted(int(x) for x in s)).to_dict()
    report = (REFERENCE_DIR / "figures" / "report.md").read_text()
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ") and line.count(" | ") > 10]
    checked = 0
    for cols in rows:
        ids, seeds = cols[-1].strip(" |"), cols[-2].strip()
        if ids in per:
            assert " " not in ids and [int(s) for s in seeds.split()] == per[ids], cols[0]
            checked += 1
    assert checked >= 10
