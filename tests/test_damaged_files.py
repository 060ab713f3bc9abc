"""Damaged files, full disks and dead jobs: the bad-input catalogue (issue 21).

Every damaged-file case runs against every entry point that reads records, as a user runs it (a subprocess): the
exit code, at most 3 lines on stderr, no traceback, the damaged file named, and every other record byte for byte
as it was. The records are copies of shipped ones in a temporary folder (never the shipped ones: reference and
claims are pointed at the copy with SSL_BENCH_REFERENCE). Checkpoints (a kill inside the write, a damaged latest
checkpoint), a full disk and damaged sweep storage have their own tests below.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ssl_bench.config.cli import guarded
from ssl_bench.records import io as results
from ssl_bench.records.io import REFERENCE_DIR, REFERENCE_ENV

REPO = Path(__file__).resolve().parent.parent
STUDY = "swav_prototypes_iterations-swav-fashion_mnist-demo"
PLAIN = ["swav-fashion_mnist-demo-s0-fe46b437", "swav-fashion_mnist-demo-s1-fe46b437",
         "simclr-fashion_mnist-demo-s0-8047d796", "simclr-fashion_mnist-demo-s1-8047d796"]


# -- the damage -----------------------------------------------------------------------------------------------------
def cut_summary(run: Path) -> Path:
    p = run / "summary.json"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # a copy that stopped half-way
    return p


def garbage_config(run: Path) -> Path:
    p = run / "config.yaml"
    p.write_bytes(b"method: [swav\n\x00\xff\xfe garbage {{{\n")
    return p


def cut_metrics(run: Path) -> Path:
    p = run / "metrics.jsonl"
    text = p.read_bytes()
    p.write_bytes(text[: text.rstrip(b"\n").rfind(b"\n") + 30])  # the last line cut after 29 bytes
    return p


DAMAGE = {"summary cut short": cut_summary, "config.yaml garbage": garbage_config, "metrics.jsonl last line cut":
          cut_metrics}


# -- the world: a results folder and a reference folder of copied records ----------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    ref_runs = REFERENCE_DIR / "runs"
    sweep = [d.name for d in results.record_dirs(ref_runs)
             if (json.loads((d / "summary.json").read_text()).get("tags") or {}).get("sweep")]
    missing = [n for n in PLAIN if not (ref_runs / n / "summary.json").exists()]
    if missing or not sweep or not (REFERENCE_DIR / "sweeps" / f"{STUDY}.db").exists():
        pytest.skip(f"shipped records not found: {missing or 'the sweep'}")
    world = tmp_path_factory.mktemp("world")
    for where in ("results/runs", "results/reference/runs"):
        for name in [*PLAIN, *sweep]:
            shutil.copytree(ref_runs / name, world / where / name)
    for where in ("results/sweeps", "results/reference/sweeps"):
        (world / where).mkdir(parents=True)
        shutil.copy(REFERENCE_DIR / "sweeps" / f"{STUDY}.db", world / where)
    (world / "results/reference/manifest.yaml").write_text(
        'compare:\n  - ["methods=[swav,simclr]", "seeds=[0,1]", dataset=fashion_mnist, budget=demo]\n'
        "plot:\n  - []\n")  # the sweep report has its own entry below
    return world


@pytest.fixture
def world(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "w")
    return tmp_path / "w"


ENTRY = {  # entry point -> (arguments, records folder it reads, the run damaged there)
    "plot": (["ssl_bench.plot", "results={w}/results"], "results/runs", PLAIN[0]),
    "compare": (["ssl_bench.compare", "methods=[swav,simclr]", "seeds=[0,1]", "dataset=fashion_mnist", "budget=demo",
                 "results={w}/results"], "results/runs", PLAIN[0]),
    "claims": (["ssl_bench.claims", "figures=false"], "results/reference/runs", PLAIN[0]),
    "reference": (["ssl_bench.reference"], "results/reference/runs", PLAIN[0]),
    "results": (["ssl_bench.results", "migrate", "{w}/results/runs"], "results/runs", PLAIN[0]),
    "sweep report": (["ssl_bench.sweep", f"study_name={STUDY}", "n_trials=0", "results={w}/results"], "results/runs",
                     None),  # None: a trial's record of the study
}


def command(world: Path, entry: str, *extra: str) -> subprocess.CompletedProcess:
    args, _, _ = ENTRY[entry]
    env = {**os.environ, REFERENCE_ENV: str(world / "results" / "reference"), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", *[a.format(w=world) for a in args], *extra], cwd=world, env=env,
                          capture_output=True, text=True, timeout=600)


def record_hashes(world: Path) -> dict[str, str]:
    """Every file of every record (run folders and sweep studies), by path."""
    out = {}
    for root in ("results/runs", "results/reference/runs", "results/sweeps", "results/reference/sweeps"):
        for p in sorted((world / root).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(world))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def damaged_run(world: Path, entry: str) -> Path:
    _, where, name = ENTRY[entry]
    if name is None:
        name = next(d.name for d in sorted((world / where).iterdir()) if d.name not in PLAIN)
    return world / where / name


def assert_one_line(proc: subprocess.CompletedProcess, code: int, named: Path) -> str:
    """Exit code, no traceback, at most 3 lines on stderr, the damaged file named; returns stderr."""
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err[-3000:], proc.stdout[-2000:])
    assert "Traceback" not in err + proc.stdout, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, lines
    assert str(named) in err, err
    return err


# claims and reference regenerate every table (about a minute each): they read records through the same functions as
# the others, so they get one damage case; every other entry point gets all three.
SLOW = ("claims", "reference")
CATALOGUE = [(case, entry) for case in DAMAGE for entry in ENTRY if entry not in SLOW or case == "summary cut short"]


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True], ids=["skip", "strict"])
@pytest.mark.parametrize(("case", "entry"), CATALOGUE)
def test_a_damaged_record_is_one_line_and_the_others_are_read_and_untouched(world, case, entry, strict):
    """Without strict: one warning line naming the file, exit 0, the rest read (and the table says so). With
    strict=true (check=true for reference and claims): one error line, exit 2. Never a traceback; no other record
    changes."""
    run = damaged_run(world, entry)
    path = DAMAGE[case](run)
    if entry == "results":  # migrate would rename nothing either way: give one record an old (hash) name
        old = world / "results/runs" / "0123abcd"
        (world / "results/runs" / PLAIN[1]).rename(old)
    before = record_hashes(world)
    extra = (["check=true"] if entry in ("claims", "reference") else ["strict=true"]) if strict else []
    proc = command(world, entry, *extra)
    err = assert_one_line(proc, 2 if strict else 0, path)
    if strict:
        assert err.splitlines()[-1].startswith(f"error: {path}: ")
        if entry == "results":
            assert old.exists()
    else:
        assert sum(line.startswith("warning: skipped") for line in err.splitlines()) == 1
        if entry == "compare":
            table = next((world / "results/compare").glob("*/table.md")).read_text()
            assert "1 run(s) skipped" in table and run.name in table
        if entry == "plot":
            assert "1 run(s) skipped" in (world / "results/figures/report.md").read_text()
        if entry == "results":
            assert not old.exists() and (world / "results/runs" / PLAIN[1]).exists()  # the others are migrated
            before = {k.replace("0123abcd", PLAIN[1]): v for k, v in before.items()}
    after = record_hashes(world)
    assert after == before


# -- sweep storage ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sqlite_study_cut_short_is_one_line_naming_it(world):
    db = world / "results/sweeps" / f"{STUDY}.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size * 3 // 4])
    before = record_hashes(world)
    proc = command(world, "sweep report")
    err = assert_one_line(proc, 2, db)
    assert "damaged" in err and "move it away" in err
    assert record_hashes(world) == before


@pytest.mark.slow
def test_a_journal_with_a_cut_last_entry_continues_from_the_last_complete_one(world):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    log = world / "results/sweeps/study.log"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.copy_study(from_study_name=STUDY, from_storage=f"sqlite:///{world / 'results/sweeps' / f'{STUDY}.db'}",
                      to_storage=optuna.storages.JournalStorage(JournalFileBackend(str(log))))
    full = log.read_bytes()
    complete = full[: full.rstrip(b"\n").rfind(b"\n") + 1]
    log.write_bytes(complete + full[len(complete):][:25])  # the last entry cut after 25 bytes
    proc = command(world, "sweep report", f"storage=journal:///{log}")
    err = assert_one_line(proc, 0, log)
    assert "cut entry" in err and "last complete entry" in err
    assert log.read_bytes() == complete  # the next entry is appended after a whole line
    assert Path(f"{log}.cut").read_bytes() == full[len(complete):][:25] + b"\n"  # nothing lost
    again = command(world, "sweep report", f"storage=journal:///{log}")
    assert again.returncode == 0 and "warning" not in again.stderr
    # A damaged entry before the last: one line naming the file and the line.
    lines = complete.split(b"\n")
    lines[3] = lines[3][:10]
    log.write_bytes(b"\n".join(lines))
    proc = command(world, "sweep report", f"storage=journal:///{log}")
    assert "at line 4" in assert_one_line(proc, 2, log)


# -- a full disk ------------------------------------------------------------------------------------------------
def test_a_full_disk_while_writing_a_table_or_figure_is_one_line_and_leaves_nothing_half_written(world, monkeypatch,
                                                                                                   capsys):
    from ssl_bench.analysis import plot

    real = os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    before = record_hashes(world)
    assert guarded(plot.main, [f"results={world / 'results'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write ")
    assert "[Errno 28] No space left on device" in err[0]
    assert ".png" in err[0] and str(world / "results/figures") in err[0]
    assert not [p for p in (world / "results").rglob("*") if p.name.endswith(".tmp") or p.suffix == ".png"]
    assert record_hashes(world) == before


# -- checkpoints ----------------------------------------------------------------------------------------------------
SMOKE = ["budget=smoke", "train.epochs=3", "eval.random_baseline=false", "data.num_workers=0"]


def run_cli(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_bench.run", *SMOKE, f"output_dir={out}", *extra],
                          capture_output=True, text=True, timeout=600, cwd=out.parent,
                          env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})})


def weights(out: Path) -> dict[str, torch.Tensor]:
    (run,) = out.iterdir()
    return load_file(run / "checkpoint" / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("full") / "runs"
    out.mkdir()
    assert run_cli(out).returncode == 0
    return weights(out)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("where", ["after_state", "after_manifest"])
def test_kill_inside_a_checkpoint_write_then_resume_gives_the_uninterrupted_weights(tmp_path, uninterrupted, where):
    """kill -9 (os._exit) inside the second checkpoint's write, after its model and optimiser files (incomplete) or
    after its manifest (complete, not yet renamed into place): resume=true ends with the same weights."""
    out = tmp_path / "runs"
    out.mkdir()
    killed = run_cli(out, env={"SSL_BENCH_DIE_IN_CHECKPOINT": f"{where}:2"})
    assert killed.returncode == 137
    (run,) = out.iterdir()
    assert (run / "checkpoint.tmp").is_dir() and not (run / "summary.json").exists()
    resumed = run_cli(out, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr and "warning" not in resumed.stdout + resumed.stderr
    step = "resumed at epoch 3" if where == "after_manifest" else "resumed at epoch 2"
    assert step in resumed.stdout
    assert_same(weights(out), uninterrupted)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint",
                                                                                        "checkpoint.prev"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dino", "byol", "barlow_twins"])
def test_kill_9_then_resume_gives_the_uninterrupted_run_for_each_newer_objective(tmp_path, method):
    """kill -9 inside the second checkpoint's write of DINO, BYOL and Barlow Twins: the resumed run ends with the
    uninterrupted run's tensors, the momentum teacher and DINO's centre included (they live in the checkpoint)."""
    full, out = tmp_path / "full" / "runs", tmp_path / "cut" / "runs"
    for d in (full, out):
        d.mkdir(parents=True)
    assert run_cli(full, f"method={method}").returncode == 0
    assert run_cli(out, f"method={method}", env={"SSL_BENCH_DIE_IN_CHECKPOINT": "after_state:2"}).returncode == 137
    resumed = run_cli(out, f"method={method}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at epoch 2" in resumed.stdout
    cut = weights(out)
    assert any(k.startswith("teacher.") for k in cut) == (method != "barlow_twins")
    assert_same(cut, weights(full))


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_resumes_from_the_previous_one_or_says_none_is_usable(tmp_path, uninterrupted):
    out = tmp_path / "runs"
    out.mkdir()
    assert run_cli(out, env={"SSL_BENCH_DIE_IN_CHECKPOINT": "after_state:3"}).returncode == 137
    (run,) = out.iterdir()
    model = run / "checkpoint" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])  # cut short (a copy that stopped, a disk that filled)
    # Damaged newest and older one gone: nothing usable, one line and how to start over.
    shutil.move(run / "checkpoint.prev", tmp_path / "prev")
    proc = run_cli(out, "resume=true")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no usable checkpoint" in proc.stderr
    assert str(run) in proc.stderr and "overwrite=true" in proc.stderr and "model.safetensors" in proc.stderr
    shutil.move(tmp_path / "prev", run / "checkpoint.prev")
    proc = run_cli(out, "resume=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(said) == 1 and str(run / "checkpoint") in said[0] and "model.safetensors" in said[0]
    assert f"resuming from {run / 'checkpoint.prev'} (epoch 2, batch 0, step 4)" in said[0]
    assert_same(weights(out), uninterrupted)


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    from ssl_bench.run import main
    from ssl_bench.training import checkpoint as train

    out = tmp_path / "runs"
    real, calls = train.write_manifest, [0]

    def full_on_second(folder):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "manifest.json"))
        return real(folder)

    monkeypatch.setattr(train, "write_manifest", full_on_second)
    assert guarded(main, [*SMOKE, f"output_dir={out}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the checkpoint" in err[0] and "No space left on device" in err[0]
    (run,) = out.iterdir()
    assert not (run / "checkpoint.tmp").exists()
    assert json.loads((run / "checkpoint" / "loop.json").read_text())["epoch"] == 1  # the previous one is kept
    monkeypatch.setattr(train, "write_manifest", real)
    assert guarded(main, [*SMOKE, f"output_dir={out}", "resume=true"]) == 0


# -- portable records ---------------------------------------------------------------------------------------------
def test_records_hold_paths_relative_to_their_results_folder_and_old_absolute_ones_still_load(tmp_path):
    from ssl_bench.config.compose import compose
    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.records.identity import configuration_id

    out = tmp_path / "results" / "runs"
    cfg = compose(["budget=smoke", "train.epochs=1", f"output_dir={out}"])
    summary = run_experiment(cfg)
    (run,) = out.iterdir()
    text = (run / "config.yaml").read_text() + (run / "summary.json").read_text()
    assert str(tmp_path) not in text
    saved = results.read_config(run)
    assert saved["output_dir"] == "runs" and "output_dir=runs" in saved["overrides"]
    assert configuration_id(saved) == configuration_id(cfg) == summary["configuration_id"]
    # An old record with absolute paths reads the same.
    saved["output_dir"] = str(out)
    saved["overrides"] = [o if not o.startswith("output_dir=") else f"output_dir={out}" for o in saved["overrides"]]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert results.load(out).loc[0, "configuration_id"] == summary["configuration_id"]
