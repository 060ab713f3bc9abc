"""Records that reproduce: retraining a record's first epoch at its seed gives its logged numbers exactly (same
threads, same device), a changed program is caught and named, and the shipped sample (one record per method)
reproduces with today's code, so a change that alters training numbers fails here at submission."""

import dataclasses
import json
import shutil

import pytest

from ssl_bench import verify
from ssl_bench.config import compose
from ssl_bench.experiment import run_experiment
from ssl_bench.reference import stale_records
from ssl_bench.results import REFERENCE_DIR, read_metrics, record_dirs, write_metrics


@pytest.fixture(scope="module")
def smoke_record(tmp_path_factory):
    ref = tmp_path_factory.mktemp("reference")
    cfg = compose(["method=swav", "budget=smoke", "seed=3", f"output_dir={ref / 'runs'}"])
    run_experiment(cfg)
    return ref, record_dirs(ref / "runs")[0]


def test_a_record_reproduces_exactly_and_a_changed_program_is_named(smoke_record, tmp_path):
    ref, run = smoke_record
    same = verify.check_record(run, tmp_path / "work")
    assert same.status == verify.REPRODUCES and same.exact, same.line()
    assert same.recorded["loss"] == same.retrained["loss"]  # equal, not close
    # What a change of code does to the record: its epoch-1 loss moves (here by 1e-4, the size the issue found).
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    rows = read_metrics(copy)
    rows[0]["loss"] += 1e-4
    write_metrics(copy, rows)
    stale = verify.check_record(copy, tmp_path / "work")
    assert stale.status == verify.STALE and "differs in loss" in stale.why
    lines = verify.summary_lines([same, stale])
    assert "1 reproduces, 1 stale" in lines[0] and copy.name in lines[1] and "retrain" in lines[1]


def test_another_thread_count_is_an_approximate_check(smoke_record, tmp_path):
    ref, run = smoke_record
    other = verify.check_record(run, tmp_path / "work", threads=2)
    assert not other.exact and "approximate" in other.line()
    assert other.status == verify.REPRODUCES  # float order only: within the stated tolerance


def test_the_ledger_marks_stale_records_for_tables_and_the_check(smoke_record, tmp_path):
    ref, run = smoke_record
    c = verify.Check(run.name, verify.STALE, "abc1234", "def5678", True, {"loss": 1.0}, {"loss": 1.1}, "differs")
    verify.write_ledger(ref, [c])
    ledger = json.loads((ref / "verification.json").read_text())
    assert ledger["records"][run.name]["status"] == "stale"
    assert stale_records(ref) == {run.name: "differs"}
    verify.write_ledger(ref, [dataclasses.replace(c, status=verify.REPRODUCES, why="")])
    assert stale_records(ref) == {}


def test_the_shipped_sample_reproduces_with_todays_code(tmp_path):
    """One shipped record per method (the budget as defined, lowest seed): its first epoch retrained now must give
    its logged loss exactly. If this fails, today's code trains differently from the code that made the shipped
    records: run `python -m ssl_bench.reference verify` and retrain the stale records it names."""
    sample = verify.sample(record_dirs(REFERENCE_DIR / "runs"))
    assert {d.name.split("-")[0] for d in sample} == {"swav", "simclr", "deepclusterv2", "selav2", "carl"}
    checks = [verify.check_record(d, tmp_path / "work") for d in sample]
    bad = [c for c in checks if c.status != verify.REPRODUCES]
    assert not bad, ("today's code does not reproduce the shipped records " + "; ".join(c.line() for c in bad)
                     + ": run `python -m ssl_bench.reference verify` and retrain the stale ones")
