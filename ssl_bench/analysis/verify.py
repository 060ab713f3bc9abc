"""Do the shipped records still come from today's code? Retrain the first epoch of a record's configuration at its
seed and compare the logged numbers with the record's.

A record keeps the code state it was trained with (``versions`` in summary.json: the commit, whether the training
code was clean, the library versions and the CPU kernel path). Training is deterministic on one device with a fixed
thread count and kernel path (crops, order and initialisation all come from the seed), so today's code either
reproduces a record's first epoch or it does not: the loss of epoch 1 (the mean over its steps) must be *equal*.
The kernel path (ssl_bench.common.kernels: the instruction set ATen, MKL and oneDNN use) decides the last bits, so
equality
is claimed only on the path the record was made or last verified on; records older than the kernel path take it
from their ledger entry. Elsewhere (another kernel path, thread count or device) the numbers must agree within
``SPREAD``, measured by ``python -m benchmarks.kernel_spread``; such a check is reported as "approximate", never as
exact.

The ledger ``<reference>/verification.json`` keeps each record's last verdict (``reproduces`` / ``stale`` /
``config changed`` / ``not checked``) with the code it was checked against; tables refuse a cell that holds a
stale run (:mod:`ssl_bench.analysis.cells`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_bench.errors import ConfigError, TrainingStopped, UnreadableRecord
from ssl_bench.records.io import read_config, read_json, read_metrics, read_summary, record_dirs, write_json
from ssl_bench.records.layout import ResultsLayout

if TYPE_CHECKING:
    from omegaconf import DictConfig

# How far the epoch-1 numbers move when only the float order changes (another kernel path, thread count or
# device): (relative, absolute) per number. Measured with `python -m benchmarks.kernel_spread`: the verify sample (one
# record per method) retrained on four other kernel paths of an AVX-512 machine (portable ATen kernels, MKL's
# reproducible mode, both, AVX2 everywhere); the worst seen is in each comment, the AVX2-only machine gave a
# loss 3.3e-4 away. Set at about three times the worst. On the record's own path a change of code is caught at any
# size (equality); elsewhere only a change larger than this.
SPREAD = {"loss": (1e-3, 0.0),  # worst 1.9e-4 relative (SimCLR, portable ATen kernels)
          "assign_entropy": (5e-3, 0.0),  # worst 1.8e-3 relative (CARL)
          "lambda_e": (5e-3, 0.0),  # CARL's KL weight follows a schedule: no difference seen
          "prototypes_used": (0.0, 3.0),  # a count: worst 1
          "monitor_knn_top1": (0.0, 5.0)}  # accuracy points on the monitor's 500 test images: worst 2.0 (CARL)
TOLERANCE = SPREAD["loss"][0]  # the loss's, quoted in lines and the ledger
# Epoch-1 numbers compared besides the loss (exactly, or with TOLERANCE), when both sides have them.
ALSO = ("assign_entropy", "prototypes_used", "monitor_knn_top1", "lambda_e")
REPRODUCES, STALE, CONFIG_CHANGED, NOT_CHECKED = "reproduces", "stale", "config changed", "not checked"


@dataclass
class Check:
    """One record against today's code."""

    run: str
    status: str  # REPRODUCES | STALE | CONFIG_CHANGED | NOT_CHECKED
    trained_with: str  # the record's commit
    checked_with: str  # today's commit
    exact: bool  # same threads, device, torch and kernel path as the record: equality required
    recorded: dict[str, float]
    retrained: dict[str, float]
    why: str = ""
    seconds: float = 0.0
    kernel: str = ""  # the kernel path it was checked on (ssl_bench.common.kernels)
    clean: bool | None = None  # whether the training code equalled checked_with (None: not a git checkout)

    def line(self) -> str:
        loss = (f"epoch-1 loss {self.recorded.get('loss', math.nan):.6f} recorded, "
                f"{self.retrained.get('loss', math.nan):.6f} now" if self.retrained else "")
        how = "exact" if self.exact else "approximate, within the measured kernel-path spread"
        return f"{self.status:<14} {self.run}: " + "; ".join(x for x in (loss, self.why, how) if x)


def _record_threads(cfg: dict[str, Any]) -> int:
    return int((cfg.get("train") or {}).get("num_threads") or 0)


def _same(key: str, a: float, b: float, exact: bool) -> bool:
    if exact:
        return a == b
    rel, abs_ = SPREAD.get(key, (TOLERANCE, 0.0))
    return math.isclose(a, b, rel_tol=rel, abs_tol=max(abs_, 1e-9))


def record_kernel(run_dir: Path, summary: dict[str, Any]) -> str | None:
    """The kernel path ``run_dir``'s numbers are exact on: the one it was trained on (summary.json), else the one an
    exact check of it reproduced on (the ledger beside it); None when neither is known."""
    made = (summary.get("versions") or {}).get("kernel")
    if made:
        return str(made)
    entry = read_ledger(ResultsLayout.of_run(run_dir).root).get(Path(run_dir).name, {})
    if entry.get("status") == REPRODUCES and entry.get("exact") and entry.get("kernel"):
        return str(entry["kernel"])
    return None


def _stop_after(epochs: int) -> Callable[[int, dict], str | None]:
    return lambda epoch, row: f"verification: {epochs} epoch(s) retrained" if epoch + 1 >= epochs else None


def check_record(run_dir: Path, work: Path, threads: int | None = None, log: io.TextIOBase | None = None) -> Check:
    """Retrain the first epoch of ``run_dir``'s configuration at its seed in ``work`` and compare."""
    from ssl_bench.pipeline.experiment import versions

    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").exists():
        return Check(run_dir.name, NOT_CHECKED, "?", "?", True, {}, {}, why="no record (summary.json) there")
    try:
        summary, cfg_rec, rows = read_summary(run_dir), read_config(run_dir), read_metrics(run_dir)
    except UnreadableRecord as exc:  # a damaged record is named, not a crash of the whole verification
        return Check(run_dir.name, NOT_CHECKED, "?", "?", True, {}, {}, why=str(exc))
    state = versions()
    base = Check(run_dir.name, NOT_CHECKED, (summary.get("versions") or {}).get("git", "?"), state.get("git", "?"),
                 True, {}, {}, kernel=state["kernel"], clean=state.get("git_clean"))
    if not rows:
        base.why = "the record has no per-epoch metrics"
        return base
    procs = int((summary.get("cost") or {}).get("num_processes") or 1)
    if procs != 1:
        base.why = f"trained on {procs} processes: verify it with accelerate launch on as many"
        return base
    cfg = _recompose(base, summary, cfg_rec, work, threads)
    same_setup, known = base.exact, record_kernel(run_dir, summary)
    if cfg is not None and known != base.kernel:
        base.exact = False  # another kernel path: the last bits may differ (ssl_bench.common.kernels)
    if cfg is None:
        return base
    new = _retrain(base, cfg, run_dir, work, log)
    if new is None:
        return base
    old0, new0 = rows[0], new[0]
    keys = ["loss", *[k for k in ALSO if k in old0 and k in new0]]
    base.recorded = {k: float(old0[k]) for k in keys}
    base.retrained = {k: float(new0[k]) for k in keys}
    differ = [k for k in keys if not _same(k, base.recorded[k], base.retrained[k], base.exact)]
    base.status = STALE if differ else REPRODUCES
    if known is None and same_setup and base.recorded == base.retrained:
        base.exact = True  # a record older than kernel paths, equal here: this path is the one it is exact on
    if differ:
        base.why = "differs in " + ", ".join(f"{k} ({base.recorded[k]:.6g} vs {base.retrained[k]:.6g})" for k in differ)
    return base


def _recompose(base: Check, summary: dict[str, Any], cfg_rec: dict[str, Any], work: Path, threads: int | None
               ) -> DictConfig | None:
    """The record's config composed again by today's code (None, with ``base``'s status and why, when it no longer
    composes or gives another configuration); sets whether the comparison is exact."""
    from ssl_bench.config.compose import compose
    from ssl_bench.pipeline.experiment import versions
    from ssl_bench.records.identity import configuration_id

    rec_threads = _record_threads(cfg_rec)
    use_threads = threads or rec_threads or (os.cpu_count() or 1)
    overrides = [o for o in summary.get("overrides") or [] if not o.startswith(("output_dir=", "train.num_threads=",
                                                                                 "resume=", "overwrite="))]
    try:
        cfg = compose([*overrides, f"output_dir={work}", f"train.num_threads={use_threads}", "train.progress=false"])
    except ConfigError as exc:
        base.status, base.why = CONFIG_CHANGED, f"its overrides no longer compose: {exc}"
        return None
    recorded_id = configuration_id(cfg_rec)
    if configuration_id(cfg) != recorded_id:
        base.status = CONFIG_CHANGED
        base.why = (f"its overrides now give configuration {configuration_id(cfg)}, not the record's "
                    f"{recorded_id} (a default changed)")
        return None
    base.exact = (rec_threads == use_threads and str((summary.get("cost") or {}).get("device", "cpu")) == "cpu"
                  and summary.get("versions", {}).get("torch") == versions().get("torch"))
    return cfg


def _retrain(base: Check, cfg: DictConfig, run_dir: Path, work: Path, log: io.TextIOBase | None
             ) -> list[dict[str, Any]] | None:
    """Train the first epoch of ``cfg`` in ``work``; its metrics rows (None, with ``base.why``, when it stopped or
    wrote none). The run folder is removed afterwards."""
    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.records.identity import run_id

    target = work / run_id(cfg)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if (run_dir / "baseline.json").exists():  # the floor is not training: reuse the record's, skip its kNN
        shutil.copy(run_dir / "baseline.json", target / "baseline.json")
    t0 = time.time()
    with contextlib.redirect_stdout(log or io.StringIO()), contextlib.redirect_stderr(log or io.StringIO()):
        try:
            run_experiment(cfg, epoch_callbacks=[_stop_after(1)])
        except TrainingStopped as exc:
            if not exc.pruned:
                base.why = f"the retrained run stopped: {exc}"
                return None
    base.seconds = time.time() - t0
    new = read_metrics(target)
    shutil.rmtree(target, ignore_errors=True)
    if not new:
        base.why = "the retrained epoch wrote no metrics"
        return None
    return new


def ledger_path(reference: Path) -> Path:
    return ResultsLayout(reference).ledger


def read_ledger(reference: Path) -> dict[str, dict[str, Any]]:
    """run folder name -> its last check (empty when never verified)."""
    p = ledger_path(reference)
    return read_json(p).get("records", {}) if p.exists() else {}


def write_ledger(reference: Path, checks: Iterable[Check]) -> None:
    """Merge ``checks`` into the ledger (one entry per record, the newest wins); records that no longer exist drop.
    A check made with uncommitted training code is refused (ConfigError): an entry names a commit, and a dirty tree
    is not that commit."""
    checks = list(checks)
    dirty = [c.run for c in checks if c.clean is False]
    if dirty:
        raise ConfigError(f"not written to the ledger: {dirty[0]} was checked with uncommitted changes to the training "
                          "code (ssl_bench/, methods/, experiments/); commit them and verify again")
    entries = read_ledger(reference)
    for c in checks:
        entries[c.run] = {k: v for k, v in asdict(c).items() if k not in ("run", "seconds")}
    runs = {d.name for d in record_dirs(ResultsLayout(reference).runs)}
    entries = {k: v for k, v in sorted(entries.items()) if k in runs}
    write_json(ledger_path(reference), {
        "about": "ssl_bench.analysis.verify: each shipped record's first epoch retrained with the code named in "
                 "checked_with "
                 "and compared with the record (python -m ssl_bench.reference verify)",
        "tolerance": {"exact": "same thread count, device, torch and kernel path: equal numbers",
                      "approximate": "another kernel path, thread count or device: within the measured spread "
                                     + ", ".join(f"{k} rel {r:g} abs {a:g}" for k, (r, a) in SPREAD.items())},
        "records": entries})


def sample(runs: list[Path], per_method: int = 1) -> list[Path]:
    """The CI sample: the first ``per_method`` records of each method whose name has no overrides (the budget as
    defined), seed 0 first."""
    out: dict[str, list[Path]] = {}
    for d in sorted(runs, key=lambda p: (p.name.split("-s")[-1], p.name)):
        method = d.name.split("-", 1)[0]
        if "=" in d.name or len(out.setdefault(method, [])) >= per_method:
            continue
        out[method].append(d)
    return [d for ds in out.values() for d in ds]


def verify(reference: Path, runs: list[Path] | None = None, threads: int | None = None, write: bool = True,
           say: Callable[[str], None] = print) -> list[Check]:
    """Check ``runs`` (default: every record under ``reference/runs``), printing one line each; the ledger is
    updated after every record (an interrupted verify keeps what it checked)."""
    from ssl_bench.pipeline.experiment import code_state

    if write and code_state().get("git_clean") is False:
        raise ConfigError("verify writes the ledger, whose entries name a commit: the training code (ssl_bench/, "
                          "methods/, experiments/) has uncommitted changes; commit them first (or write=false)")
    runs = runs if runs is not None else record_dirs(ResultsLayout(reference).runs)
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="ssl_bench-verify-") as tmp:
        log_path = Path(tmp) / "runs.log"
        for i, d in enumerate(runs, 1):
            with open(log_path, "a") as log:
                c = check_record(d, ResultsLayout(tmp).runs, threads, log)
            checks.append(c)
            say(f"[{i}/{len(runs)}] {c.line()} ({c.seconds:.0f} s)")
            sys.stdout.flush()
            if write:
                write_ledger(reference, [c])
    return checks


def coverage_line(reference: Path, commit: str | None = None) -> str:
    """'N of M records verified at the current code state (<commit>), K at older states, J never; E of them exact
    on this kernel path': what the ledger proves about today's code."""
    from ssl_bench.common.kernels import kernel_path
    from ssl_bench.pipeline.experiment import code_state, training_commit

    state = code_state()
    commit = commit or state.get("git", "?")
    entries = read_ledger(reference)
    names = [d.name for d in record_dirs(ResultsLayout(reference).runs)]
    ok = [entries[n] for n in names if entries.get(n, {}).get("status") == REPRODUCES]
    # The code state is the training code's last commit, so a later commit of docs or tests keeps the entries current.
    code = {c: training_commit(c) or c for c in {commit, *(e.get("checked_with") for e in ok)} if c}
    now = [e for e in ok if code.get(e.get("checked_with")) == code[commit] and e.get("clean") is not False]
    exact_here = [e for e in now if e.get("exact") and e.get("kernel") == kernel_path()]
    dirty = "" if state.get("git_clean") is not False else "; the training code has uncommitted changes"
    since = f"{commit}, training code as of {code[commit]}" if code[commit] != commit else commit
    return (f"{len(now)} of {len(names)} records verified at the current code state ({since}{dirty}), "
            f"{len(ok) - len(now)} at older states, {len(names) - len(ok)} not reproducing or never checked; "
            f"{len(exact_here)} of the current ones exactly on this kernel path")


def summary_lines(checks: list[Check]) -> list[str]:
    """The closing lines: counts, and which records to retrain (with the command that does it)."""
    by: dict[str, list[Check]] = {}
    for c in checks:
        by.setdefault(c.status, []).append(c)
    lines = ["verified: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by.items()))]
    bad = by.get(STALE, []) + by.get(CONFIG_CHANGED, [])
    if bad:
        lines.append(f"today's code does not reproduce {len(bad)} record(s); retrain them (overwrite=true) with the "
                     f"command in their summary.json 'overrides': " + ", ".join(c.run for c in bad))
    return lines
