"""Whole-run proof of a shipped record: retrain its whole run with today's code and compare every number.

``ssl_bench.analysis.verify`` retrains a record's first epoch, which proves that today's code starts the run the same
way.
The verdicts the project publishes rest on the *final* numbers, so the records behind them (the five-method table,
the claims) are also retrained whole: the record's own overrides and thread count, in a scratch results folder
(``<scratch>/<commit>/runs/<run_id>``), then every number of the new record is compared with the shipped one —
every per-epoch row of metrics.jsonl and every number of summary.json's metrics (plus epochs, batch size, seed,
images seen, guardrails), for equality. Clock readings (wall_s, images_per_s, train_s, peak memory) are not results
and are not compared; keys today's code writes that the record does not have (later health keys) are listed, not
compared.

Equality is what the same program gives on the same kernel path (ssl_bench.common.kernels), thread count, torch and
device; the comparison is called *exact* when the record (or its exact ledger entry) names this kernel path, and
*approximate* otherwise (a record older than the kernel path names none): equal numbers over a whole run there
show the path reproduces it; unequal ones may be the path's spread, not the code.

The result goes to ``<record>/retrain.json`` (one small file per record, so parallel writers never race): the
commit and whether the training code was clean, the kernel path, threads and torch, ``equal``, the count of numbers
compared and the first differing ones. When equal, the new record's predictions.npz (per-test-image predictions,
ssl_bench.evaluation.predictions) is copied into the shipped record: the retrain proved they belong to it. When not
equal nothing of the shipped record is touched; the scratch record is kept, and the difference is a finding to
explain (named in retrain.json and the printed line), never something to overwrite.

Refused with uncommitted training code (a result names a commit). Resumable: a record with an equal retrain.json
at the current commit is skipped, and an interrupted retrain continues from its checkpoint (resume=true), its
scratch folder being that commit's.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ssl_bench.errors import ConfigError, TrainingStopped, UnreadableRecord
from ssl_bench.records.io import read_config, read_json, read_metrics, read_summary, write_atomic, write_json
from ssl_bench.records.layout import ResultsLayout

RETRAIN = "retrain.json"
PREDICTIONS = "predictions.npz"
EQUAL, DIFFERS, NOT_RETRAINED = "equal", "differs", "not retrained"
# Clock readings and machine load, not results: never compared.
TIMING = frozenset({"wall_s", "images_per_s", "train_s", "peak_mem_mb"})
# summary.json's parts that are results (its metrics tree and what fixes the run's size and outcome).
SUMMARY_PARTS = ("metrics", "epochs", "batch_size", "seed", "guardrails", "collapsed")
FIRST = 10  # differing numbers kept in retrain.json
SETS = ("table", "claims", "all")


@dataclass
class Retrain:
    """One shipped record retrained whole at today's code (what retrain.json holds)."""

    run: str
    status: str  # EQUAL | DIFFERS | NOT_RETRAINED
    equal: bool
    commit: str
    git_clean: bool | None
    kernel: str
    threads: int
    torch: str
    exact: bool  # the record's own kernel path, threads, torch and device: equality is what the program gives
    trained_with: str = "?"  # the record's commit
    compared: int = 0  # numbers compared
    differences: list[dict[str, Any]] = field(default_factory=list)  # the first FIRST differing numbers
    n_differences: int = 0
    added: list[str] = field(default_factory=list)  # keys only the new record has (per-epoch ones named once)
    predictions: bool = False  # predictions.npz copied into the shipped record
    resumed: bool = False  # continued from a checkpoint of an interrupted retrain
    scratch: str = ""  # the new record, relative to the scratch folder (<commit>/runs/<run>)
    seconds: float = 0.0
    finished: str = ""
    why: str = ""

    def line(self) -> str:
        how = ("exact: the record's kernel path, threads and torch" if self.exact else
               "approximate: the record names another or no kernel path" + (
                   "; equal over the whole run here" if self.equal else ", so a difference may be the path's spread"))
        if self.status == EQUAL:
            what = f"all {self.compared} numbers equal" + ("; predictions.npz added" if self.predictions else "")
        elif self.status == DIFFERS:
            first = self.differences[0] if self.differences else {}
            what = (f"FINDING: {self.n_differences} of {self.compared} numbers differ, first {first.get('key')} "
                    f"{first.get('recorded')!r} recorded vs {first.get('retrained')!r} now; record untouched, new "
                    f"record kept in the scratch folder at {self.scratch}")
        else:
            what = self.why
        return f"{self.status:<13} {self.run}: {what} ({how})"


def numbers(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every number (int, float, bool, null) in ``tree`` under a dotted key, clock readings (TIMING) left out."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k not in TIMING:
                out.update(numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif tree is None or isinstance(tree, bool | int | float):
        out[prefix] = tree
    return out


def record_numbers(run_dir: Path) -> dict[str, Any]:
    """The numbers of a record that are results: each epoch row of metrics.jsonl, then summary.json's SUMMARY_PARTS
    and the images seen (summary.json read as the tables read it, ssl_bench.records.io.read_summary)."""
    out: dict[str, Any] = {}
    for row in read_metrics(run_dir):
        out.update(numbers(row, f"metrics.jsonl[epoch {row['epoch']}]"))
    summary = read_summary(run_dir)
    out.update(numbers({k: summary[k] for k in SUMMARY_PARTS if k in summary}, "summary.json"))
    out["summary.json.cost.images_seen"] = (summary.get("cost") or {}).get("images_seen")
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as a record means it: NaN equals NaN (a diverged number reproduced), true is not 1."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def compare(recorded: dict[str, Any], retrained: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """(every number of ``recorded`` that ``retrained`` does not have equal, in the record's order; the keys only
    ``retrained`` has). A number the new record lacks is a difference (``retrained`` null, ``missing``)."""
    diffs = [{"key": k, "recorded": v, "retrained": retrained.get(k), **({} if k in retrained else {"missing": True})}
             for k, v in recorded.items() if k not in retrained or not _same(v, retrained[k])]
    return diffs, [k for k in retrained if k not in recorded]


def code_is_clean() -> dict[str, Any]:
    """The code state (commit, git_clean); ConfigError when the training code has uncommitted changes or is not a
    git checkout: a retrain's result names a commit, and a dirty tree is not that commit."""
    from ssl_bench.pipeline.experiment import code_state

    state = code_state()
    if not state:
        raise ConfigError("retrain needs a git checkout: its result names the commit it retrained with")
    if state.get("git_clean") is False:
        raise ConfigError("the training code (ssl_bench/, methods/, experiments/, pyproject.toml) has uncommitted "
                          "changes: a whole-run retrain names the commit it proves, so commit them first, or run it "
                          "from a clean worktree (git worktree add <dir> <commit>; scripts/retrain_runs.sh does)")
    return state


def already_equal(run_dir: Path, commit: str) -> bool:
    """Whether ``run_dir`` has an equal retrain.json made with clean code at ``commit`` (nothing left to prove)."""
    p = Path(run_dir) / RETRAIN
    if not p.exists():
        return False
    try:
        r = read_json(p)
    except UnreadableRecord:
        return False
    return bool(r.get("equal")) and r.get("commit") == commit and r.get("git_clean") is True


def _start(run_dir: Path, state: dict[str, Any]) -> tuple[Retrain, dict[str, Any] | None, dict[str, Any] | None]:
    """The result so far (status NOT_RETRAINED until compared) and the record's summary and config (None, with
    ``why``, when the record cannot be retrained here)."""
    import torch

    from ssl_bench.common.kernels import kernel_path

    res = Retrain(run_dir.name, NOT_RETRAINED, False, str(state.get("git", "?")), state.get("git_clean"),
                  kernel_path(), 0, torch.__version__, False)
    try:
        summary, cfg_rec = read_summary(run_dir), read_config(run_dir)
    except UnreadableRecord as exc:
        res.why = str(exc)
        return res, None, None
    res.trained_with = str((summary.get("versions") or {}).get("git", "?"))
    procs = int((summary.get("cost") or {}).get("num_processes") or 1)
    if procs != 1:
        res.why = f"trained on {procs} processes: retrain it with accelerate launch on as many"
        return res, None, None
    return res, summary, cfg_rec


def _compose(res: Retrain, run_dir: Path, summary: dict[str, Any], cfg_rec: dict[str, Any], runs: Path) -> Any:
    """The record's run composed again by today's code at its own thread count, in ``runs`` under the record's
    name, resuming an interrupted retrain; None (with ``res.why``) when it no longer composes the same."""
    from ssl_bench.analysis import verify

    probe = verify.Check(run_dir.name, verify.NOT_CHECKED, res.trained_with, res.commit, True, {}, {})
    cfg = verify._recompose(probe, summary, cfg_rec, runs, None)  # the one rule for recomposing a record
    if cfg is None:
        res.why = f"{probe.status}: {probe.why}"
        return None
    res.threads = int(cfg.train.num_threads)
    res.exact = probe.exact and verify.record_kernel(run_dir, summary) == res.kernel
    cfg.run_id, cfg.resume = run_dir.name, True
    return cfg


def _train(res: Retrain, cfg: Any, log_path: Path) -> Path | None:
    """Run ``cfg`` to the end (continuing a checkpoint), its output appended to ``log_path``; the new record's
    folder, or None (with ``res.why``) when it stopped. An interruption (Ctrl-C, SIGTERM) propagates: the checkpoint
    is saved and the next retrain continues it."""
    from ssl_bench.pipeline.experiment import CHECKPOINTS, run_experiment

    target = Path(cfg.output_dir) / res.run
    res.scratch = str(Path(*target.parts[-3:]))  # no path of this machine in a record's folder
    res.resumed = not (target / "summary.json").exists() and any((target / c).exists() for c in CHECKPOINTS)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            run_experiment(cfg)
        except TrainingStopped as exc:
            if exc.exit_code == 130:
                raise
            res.why = f"the retrained run stopped: {exc}"
            return None
    res.seconds = time.time() - t0
    return target


def retrain_record(run_dir: Path, scratch: Path, state: dict[str, Any] | None = None) -> Retrain:
    """Retrain ``run_dir``'s whole run in ``scratch/<commit>/runs``, compare, and write ``run_dir/retrain.json``
    (and, when equal, ``run_dir/predictions.npz``); returns the result."""
    run_dir = Path(run_dir)
    state = state if state is not None else code_is_clean()
    res, summary, cfg_rec = _start(run_dir, state)
    root = ResultsLayout(Path(scratch) / res.commit)
    if summary is not None and cfg_rec is not None:
        cfg = _compose(res, run_dir, summary, cfg_rec, root.runs)
        new = _train(res, cfg, root.root / "logs" / f"{res.run}.log") if cfg is not None else None
        if new is not None:
            _judge(res, run_dir, new)
    res.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    about = ("ssl_bench.analysis.retrain: this record's whole run retrained with the code named in commit and every "
             "number compared (python -m ssl_bench.reference retrain)")
    write_json(run_dir / RETRAIN, {"about": about, **{k: v for k, v in asdict(res).items() if k != "run"}})
    return res


def _judge(res: Retrain, run_dir: Path, new: Path) -> None:
    """Compare the new record with the shipped one; when every number is equal, copy its predictions.npz in."""
    try:
        recorded, retrained = record_numbers(run_dir), record_numbers(new)
    except (UnreadableRecord, KeyError) as exc:
        res.why = f"cannot compare: {exc}"
        return
    diffs, added = compare(recorded, retrained)
    res.added = sorted({re.sub(r"\[epoch \d+\]", "[epoch *]", k) for k in added})
    res.compared, res.n_differences, res.differences = len(recorded), len(diffs), diffs[:FIRST]
    res.equal = not diffs
    res.status = EQUAL if res.equal else DIFFERS
    if res.equal and (new / PREDICTIONS).exists():
        write_atomic(run_dir / PREDICTIONS, (new / PREDICTIONS).read_bytes())
        res.predictions = True


def record_set(which: str, ref: Path) -> list[Path]:
    """The shipped records of ``which``: ``table`` the five-method table's (the manifest's study=methods
    comparison), ``claims`` the claims' (experiments/claims.yaml, the variants each claim tests), ``all`` every
    record; each with every seed it has. Table first, each record once."""
    from ssl_bench.records.io import record_dirs

    if which not in SETS:
        raise ConfigError(f"set={which}; valid choices: {', '.join(SETS)}")
    runs = sorted(record_dirs(ResultsLayout(ref).runs), key=lambda d: (int(read_summary(d).get("seed", 0)), d.name))
    if which == "all":  # seed by seed: a partial pass already gives whole seeds of every configuration
        return runs
    ids = _configurations(which, ref)
    return [d for d in runs if d.name.rpartition("-")[2] in ids]  # a record's name ends in its configuration id


def _configurations(which: str, ref: Path) -> set[str]:
    """The configuration ids of a set's planned runs (every seed of one configuration shares its id)."""
    import yaml

    from ssl_bench.analysis import claims as cl
    from ssl_bench.analysis import compare as cmp
    from ssl_bench.records.identity import configuration_id

    rel = ref.relative_to(cl.ROOT) if ref.is_relative_to(cl.ROOT) else ref
    plans = []
    if which == "table":
        for argv in (yaml.safe_load((ref / "manifest.yaml").read_text()) or {}).get("compare") or []:
            args = cmp.plan_arguments(argv)[0]
            if args.get("study") == "methods":
                plans.append((cmp.plan(**{**args, "seeds": [0], "results": rel}), None))
    else:
        data = cl.read_claims()
        common = [str(x) for x in data.get("common") or []]
        for claim in data.get("claims") or []:
            plans.append((cmp.plan(study=claim["study"], overrides=common, seeds=[0], results=rel),
                          cl.claim_variants(claim["test"])))
    return {configuration_id(r.cfg) for plan, variants in plans for r in plan.runs
            if variants is None or r.variant in variants}


def retrain(ref: Path, runs: list[Path], scratch: Path, say: Callable[[str], None] = print) -> list[Retrain]:
    """Retrain ``runs`` whole, one after another, printing one line each; a record already proven equal at this
    commit is skipped (said so). Refused with uncommitted training code."""
    state = code_is_clean()
    out = []
    for i, d in enumerate(runs, 1):
        if already_equal(d, state["git"]):
            say(f"[{i}/{len(runs)}] skipped       {d.name}: already equal at {state['git']} ({RETRAIN})")
            continue
        say(f"[{i}/{len(runs)}] retraining    {d.name} ...")
        sys.stdout.flush()
        r = retrain_record(d, scratch, state)
        out.append(r)
        say(f"[{i}/{len(runs)}] {r.line()} ({r.seconds:.0f} s)")
        sys.stdout.flush()
    return out


def summary_line(results: list[Retrain]) -> str:
    """'retrained: N equal, K differ, J not retrained' with the differing records named."""
    by: dict[str, list[str]] = {}
    for r in results:
        by.setdefault(r.status, []).append(r.run)
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by.items())) or "nothing to retrain"
    bad = by.get(DIFFERS, [])
    return f"retrained: {counts}" + (f"; findings (retrain.json beside each): {', '.join(bad)}" if bad else "")

