"""The results layout: one object names every folder, and its names are the ones on disk (shipped records)."""

from pathlib import Path

from ssl_bench.records.io import REFERENCE_DIR
from ssl_bench.records.layout import ResultsLayout


def test_layout_names_the_shipped_folders():
    ref = ResultsLayout(REFERENCE_DIR)
    for path in (ref.runs, ref.compare(), ref.figures(), ref.sweeps, ref.ledger):
        assert path.exists(), path
    run = next(p for p in ref.runs.iterdir() if (p / "summary.json").exists())
    assert ref.run(run.name) == run
    assert ResultsLayout.of_run(run) == ref
    assert ResultsLayout.of_runs(ref.runs) == ref
    study = next(p for p in ref.figures().iterdir() if p.is_dir())
    assert ref.figures(study.name) == study


def test_layout_paths():
    r = ResultsLayout("results")
    assert str(r.runs) == "results/runs" and str(r.run("x")) == "results/runs/x"
    assert r.compare("c") == Path("results/compare/c") and r.compare() == Path("results/compare")
    assert r.figures() == Path("results/figures") and r.figures(None) == r.figures("") == r.figures()
    assert r.figures("methods") == Path("results/figures/methods")
    assert r.sweep_db("s") == Path("results/sweeps/s.db") and r.sweep_lock("a") == Path("results/sweeps/locks/a.lock")
    assert (r.baselines, r.splits) == (Path("results/baselines"), Path("results/splits"))
    assert r.ledger == Path("results/verification.json")
