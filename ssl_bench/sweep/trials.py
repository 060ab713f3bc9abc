"""One trial: an ordinary run tagged with the study and trial number, its objective, and why it failed."""

from __future__ import annotations

import fcntl
import logging
import math
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, open_dict

from ssl_bench.analysis.against_reference import reference_lines
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.errors import DataNotFound, TrainingStopped
from ssl_bench.pipeline.experiment import run_experiment
from ssl_bench.records.io import find_run_dir
from ssl_bench.sweep.spec import Sweep, fmt_value
from ssl_bench.sweep.storage import IDLE, States, grid_left, is_storage_error, retry
from ssl_bench.sweep.workers import share


class TrialFailed(Exception):
    """A trial without a usable result (NaN loss, collapse, out of memory, a crash); the study goes on."""


class Idle(TrialFailed):
    """A grid worker asked for a trial after another one took the last queued cell: nothing is trained."""


def frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The stored trial (an optuna.Trial does not show its system attributes, which hold a grid cell)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)




def metric(summary: dict[str, Any], name: str) -> float | None:
    """A number from a run record: a key of ``metrics`` or a dotted path (``cost.wall_s``)."""
    for root in (summary.get("metrics", {}), summary):
        node: Any = root
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int | float) and not isinstance(node, bool):
            return float(node)
    return None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@contextmanager
def point_lock(path: Path, take: bool) -> Iterator[None]:
    """Workers sharing a results folder never train the same point at once: the second waits, then reuses the
    first one's record (or resumes its checkpoint). Only the main process of a trial locks."""
    if not take:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another worker is training this point ({path.stem}); waiting for it", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _reporter(trial: optuna.Trial, sw: Sweep) -> Callable[[int, dict], str | None]:
    """Epoch callback: report the online kNN to Optuna; a reason to stop when the pruner says so."""

    def report(epoch: int, row: dict) -> str | None:
        value = row.get("monitor_knn_top1")
        if value is None or not math.isfinite(value):
            return None
        trial.report(float(value), epoch)
        if trial.should_prune():
            return (f"pruned by the {sw.pruner['type']} pruner: online kNN top-1 {value:.2f}% after epoch "
                    f"{epoch + 1}")
        return None

    return report


@dataclass
class _Notes:
    """A trial's user attributes, written on the main process (the others have no trial)."""

    trial: optuna.Trial | None

    def __call__(self, **attrs: Any) -> None:
        if self.trial is not None:
            for k, v in attrs.items():
                self.trial.set_user_attr(k, v)

    def failed(self, kind: str, reason: str) -> TrialFailed:
        self(fail_kind=kind, reason=reason)
        return TrialFailed(reason)


def run_trial(sw: Sweep, number: int, params: dict[str, Any], trial: optuna.Trial | None = None,
              position: tuple[int, int] | None = None) -> float | None:
    """Train and evaluate one point as an ordinary run tagged with the study and trial number. On the main
    process (``trial`` given) return the objective; raise TrialFailed / optuna.TrialPruned with the reason
    stored as user attributes. Other processes (trial None) follow along and return None. ``position`` (n, N):
    this is the n-th of the N trials this command runs, for the line that announces it."""
    note = _Notes(trial)
    overrides = [*sw.base, *(f"{k}={fmt_value(v)}" for k, v in params.items()), "resume=true"]
    try:
        cfg = compose(overrides)
    except ConfigError as exc:
        raise note.failed("config", f"invalid config at this point: {exc}") from None
    with open_dict(cfg):
        cfg.tags.sweep, cfg.tags.study, cfg.tags.trial = sw.meta["sweep"], sw.study, str(number)
    run_dir = find_run_dir(cfg)
    record = run_dir / "summary.json"
    if trial is not None:
        # A grid worker may end up taking more than it planned (a dead worker's trial): then only the count.
        of = "" if not position else f" ({position[0]} of {position[1]})" if position[0] <= position[1] \
            else f" ({position[0]})"
        print(f"[sweep {sw.study}] trial {number}{of}: " + " ".join(f"{k}={fmt_value(v)}" for k, v in params.items()),
              flush=True)
    summary = _train_point(sw, cfg, run_dir, number, trial, note)
    if trial is None:
        return None
    return _trial_value(sw, summary, record, note)


def _train_point(sw: Sweep, cfg: DictConfig, run_dir: Path, number: int, trial: optuna.Trial | None, note: _Notes
                 ) -> dict[str, Any]:
    """The run of one point (reused when its record exists); every way it can end maps to a trial state."""
    callbacks = [_reporter(trial, sw)] if trial is not None and sw.prunes else []
    record = run_dir / "summary.json"
    try:
        with point_lock(sw.results.sweep_lock(run_dir.name), trial is not None):
            note(run_id=run_dir.name, record=str(record), reused=record.exists())
            return run_experiment(cfg, epoch_callbacks=callbacks, beside=reference_lines)
    except TrainingStopped as exc:
        if exc.pruned:
            note(fail_kind="pruned", reason=str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        if exc.exit_code == 1:
            raise note.failed("nan", f"diverged: {_one_line(exc)}") from None
        note(fail_kind="interrupted", reason=_one_line(exc))
        if trial is not None:  # Ctrl-C / SIGTERM stops this worker; its point goes back in the queue for another
            retry(trial.study, frozen(trial.study, number), f"interrupted: {_one_line(exc)}")
        raise
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which turns it into TrainingStopped)
        note(fail_kind="interrupted", reason="interrupted (Ctrl-C)")
        if trial is not None:
            retry(trial.study, frozen(trial.study, number), "interrupted (Ctrl-C)")
        raise
    except DataNotFound:
        raise  # every trial would fail the same way
    except ConfigError as exc:
        raise note.failed("config", f"invalid config at this point: {exc}") from None
    except Exception as exc:
        if is_storage_error(exc):
            raise  # not the trial's fault: the command reports it in one line
        if _is_oom(exc):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise note.failed("oom", f"out of memory: {_one_line(exc)}") from None
        traceback.print_exc()
        raise note.failed("crash", f"crashed: {type(exc).__name__}: {_one_line(exc)}") from None


def _trial_value(sw: Sweep, summary: dict[str, Any], record: Path, note: _Notes) -> float:
    """The objective read from the run's record, with a few of its keys noted on the trial."""
    value = metric(summary, sw.objective)
    for key in ("knn_top1", "monitor_knn_top1", "final_loss", "final_prototypes_used"):
        if key in summary.get("metrics", {}):
            note(**{key: summary["metrics"][key]})
    note(wall_s=summary.get("cost", {}).get("wall_s"))
    if value is None:
        available = sorted(summary.get("metrics", {})) + sorted(f"cost.{k}" for k in summary.get("cost", {}))
        note(fail_kind="config", reason=f"objective {sw.objective} not in the record")
        raise ConfigError(f"objective '{sw.objective}' is not in the run record {record}; available: "
                          f"{', '.join(available)}")
    note(objective_value=value)
    if summary.get("collapsed"):
        raise note.failed("collapse", f"collapsed: every image assigned to one prototype ({sw.objective} {value:.2f})")
    if not math.isfinite(value):
        raise note.failed("nan", f"{sw.objective} is {value}")
    return value



class _QuietFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback: the reason is the whole story (run_trial printed a crash's
    traceback already), an idle grid trial is no news, and a lost storage is said once, in one line, by the
    command."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Idle) or is_storage_error(exc):
            return False
        # A crash's traceback was printed where it happened (run_trial); Ctrl-C and stops need none.
        record.exc_info = None
        return True


def optimize(study: optuna.Study, sw: Sweep, n: int) -> None:
    """Run up to ``n`` trials here. A grid without an explicit n_trials is drained instead: this worker takes
    queued cells until none is queued or running anywhere (it waits for other workers' trials, so that one whose
    worker dies is retried here) and never samples a cell of its own."""
    drain = sw.sampler["type"] == "grid" and sw.n_trials is None
    poll = float(min(sw.heartbeat, 5))
    started = [0]

    def idle(trial: optuna.Trial, reason: str) -> Idle:
        trial.set_user_attr("fail_kind", IDLE)
        trial.set_user_attr("reason", reason)
        return Idle(reason)

    def objective(trial: optuna.Trial) -> float:
        if drain:
            trials = study.get_trials(deepcopy=False)
            cell = next(t for t in trials if t.number == trial.number).system_attrs.get("fixed_params")
            if not cell:
                # The last queued cell went to another worker between grid_left and this ask: train nothing.
                study.stop()
                raise idle(trial, "no grid cell left to train (another worker took the last one)")
            done = [t.number for t in trials if t.state == States.COMPLETE and t.params == cell]
            if done:  # a retry queued for a trial that completed after all (its worker was only slow)
                raise idle(trial, f"cell already trained by trial {done[0]}")
        params = {name: p.suggest(trial) for name, p in sw.params.items()}
        share(("trial", trial.number, params))
        started[0] += 1
        value = run_trial(sw, trial.number, params, trial, position=(started[0], n))
        assert value is not None
        return value

    def more(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        if not grid_left(study, poll):
            study.stop()

    if drain and not grid_left(study, poll):
        return
    log = logging.getLogger("optuna.study._optimize")
    filt = _QuietFailures()
    log.addFilter(filt)
    try:
        while True:
            try:
                study.optimize(objective, n_trials=None if drain else n - started[0], timeout=sw.timeout,
                               catch=(TrialFailed,), callbacks=[more] if drain else None)
                return
            except Exception as exc:
                if not _taken(exc):
                    raise
                # This worker stalled past grace_period (a frozen machine, a storage outage) and another one
                # declared its trial lost and queued it again; the retry reuses this trial's record.
                print(f"[sweep {sw.study}] a trial of this worker was declared lost by another worker (no heartbeat "
                      f"for grace_period); its retry reuses the record", flush=True)
                if not drain and started[0] >= n:
                    return
    finally:
        log.removeFilter(filt)


def _taken(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def follow(sw: Sweep) -> None:
    """The other processes: run each trial the main process announces until it says stop."""
    while True:
        msg = share(None)
        if not msg or msg[0] != "trial":
            return
        _, number, params = msg
        try:
            run_trial(sw, number, params, None)
        except (TrialFailed, optuna.TrialPruned):
            pass

