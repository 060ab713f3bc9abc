"""Where a study lives: Optuna storages from a URL, opening or continuing a study, planning a grid's trials,
and what becomes of the trials of workers that die (heartbeats, retries) or of a storage that goes away."""

from __future__ import annotations

import datetime
import fcntl
import inspect
import itertools
import os
import random
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the hook Optuna's own RDB heartbeat implements

from ssl_bench.config.compose import ConfigError
from ssl_bench.sweep.spec import DEFAULT_N_TRIALS, Sweep, make_pruner, make_sampler

States = optuna.trial.TrialState
META = "ssl_bench"  # study user attribute holding what the study is (for continuation checks and reports)
# Failures that may say nothing about the parameters (a killed worker, Ctrl-C, a crash, out of memory): a grid
# trains such a cell again when the command is run again. NaN losses, collapses and invalid points are results.
RETRYABLE = (None, "interrupted", "crash", "oom", "lost")
# Trials that never trained anything: a grid worker that found the last cell taken between its check and its ask.
IDLE = "idle"
BEAT = "ssl_bench:heartbeat"  # journal trials: the time of the last heartbeat (the RDB storage has its own table)
MAX_RETRIES = 3  # a cell that kills its worker every time (the kernel's OOM killer) is not retried for ever


class StorageUnavailable(Exception):
    """The study's storage went away (server stopped, network down, journal file gone); one line, exit 1."""


def storage_error(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain that says the storage is unreachable (rather than a bug or bad input), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, StorageUnavailable):
            return exc
        try:
            import sqlalchemy.exc as sa

            if isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.DisconnectionError):
                return exc
        except ImportError:
            pass
        if isinstance(exc, OSError) and any("optuna/storages/journal" in f.filename.replace("\\", "/")
                                            for f in traceback.extract_tb(exc.__traceback__)):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def is_storage_error(exc: BaseException | None) -> bool:
    return storage_error(exc) is not None


def unavailable(url: str, exc: BaseException) -> StorageUnavailable:
    """One line: the storage, what its driver said, what to do."""
    found = storage_error(exc) or exc
    if isinstance(found, StorageUnavailable):
        return found
    first = (str(getattr(found, "orig", None) or found).strip().splitlines() or [type(found).__name__])[0]
    return StorageUnavailable(f"the study's storage is unreachable ({redact(url)}): {first}; run the same command "
                              "again when it is back: the study continues where it stopped")


def redact(url: str) -> str:
    """The URL without its password, for messages and reports."""
    head, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0] and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return url


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> bool:
    """Queue a copy of ``trial`` (same parameters; a grid's cell keeps its fixed_params) for the next free worker,
    unless it was retried MAX_RETRIES times already. Its run resumes the dead trial's checkpoint (same run folder)."""
    history = [*trial.system_attrs.get("ssl_bench:retry_of", []), trial.number]
    if len(history) > MAX_RETRIES:
        return False
    system_attrs = {k: v for k, v in trial.system_attrs.items() if k != BEAT}
    system_attrs["ssl_bench:retry_of"] = history
    study.add_trial(optuna.trial.create_trial(
        state=States.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": trial.number, "retry_reason": why}, system_attrs=system_attrs))
    return True


def _retry_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    # The trial as stored after it was failed: if its worker's own result got there first (a journal keeps the
    # first of the two and still reports the second as done), it is complete and needs no retry.
    if trial.state == States.FAIL:
        retry(study, trial, trial.user_attrs.get("reason", "its worker stopped"))


class _Heartbeats:
    """What both storages add to Optuna's heartbeat: a stale trial is told why it failed (before it is failed,
    while it can still take attributes), and a lost connection in the heartbeat thread is left for the worker's
    next call to report (a thread's traceback would say nothing more)."""

    grace: int

    def _tag_stale(self, ids: list[int]) -> list[int]:
        for trial_id in ids:
            try:
                self.set_trial_user_attr(trial_id, "fail_kind", "lost")  # type: ignore[attr-defined]
                self.set_trial_user_attr(trial_id, "reason",  # type: ignore[attr-defined]
                                         f"its worker stopped sending heartbeats for over {self.grace} s "
                                         "(killed, or its machine lost); retried by another worker")
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
        return ids


class _RDBStorage(_Heartbeats, optuna.storages.RDBStorage):
    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception:
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        # A worker killed between taking a trial and its first heartbeat leaves a running trial without one, which
        # Optuna never calls stale (and a grid worker would wait for it for ever): judge those by their start.
        cutoff = datetime.datetime.now() - datetime.timedelta(seconds=self.grace)
        silent = [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(States.RUNNING,))
                  if t._trial_id not in stale and t.datetime_start is not None and t.datetime_start < cutoff]
        if silent:
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            beat = models.TrialHeartbeatModel.trial_id
            with _create_scoped_session(self.scoped_session) as session:
                beating = {row[0] for row in session.query(beat).filter(beat.in_(silent)).all()}
            stale += [i for i in silent if i not in beating]
        return self._tag_stale(stale)


class _JournalStorage(_Heartbeats, optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage has no heartbeat: each running trial's worker writes the time into the trial every
    ``interval`` seconds, and a running trial whose last one is older than ``grace`` seconds is stale (the clocks
    of the machines sharing the file are assumed to agree to within seconds, as NTP keeps them)."""

    def __init__(self, backend: Any, interval: int, grace: int) -> None:
        super().__init__(backend)
        self.interval, self.grace = interval, grace

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, BEAT, time.time())
        except Exception:
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(States.RUNNING,)):
            beat = t.system_attrs.get(BEAT) or (t.datetime_start.timestamp() if t.datetime_start else now)
            if now - float(beat) > self.grace:
                stale.append(t._trial_id)
        return self._tag_stale(stale)

    def get_heartbeat_interval(self) -> int | None:
        return self.interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return _retry_stale

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # its name before Optuna 4.9


class _KernelLock:
    """The journal's write lock as a POSIX record lock (fcntl.lockf, which NFSv3+ supports) on <journal>.flock: the
    kernel releases it when its holder dies, so a worker killed while writing blocks no one (Optuna's own file
    locks make everyone wait 30 s for a dead holder's lock to go stale, long enough to miss every heartbeat).
    POSIX locks belong to a process, so its threads (the heartbeat's) also take a thread lock."""

    def __init__(self, journal: str) -> None:
        self.path = journal + ".flock"
        self.fd: int | None = None
        self.threads = threading.Lock()

    def works(self) -> bool:
        try:
            self.acquire()
            self.release()
            return True
        except OSError:  # a filesystem without POSIX locks: Optuna's symlink lock instead
            self.threads = threading.Lock()
            return False

    def acquire(self) -> bool:
        self.threads.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            self.threads.release()
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        fd, self.fd = self.fd, None
        try:
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self.threads.release()


def _rdb_url(url: str) -> str:
    """postgresql://... means psycopg (3) when that is the driver installed (SQLAlchemy's default is psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def check_sqlite(path: Path) -> None:
    """A study file cut short (a copy that stopped half-way) is one line naming it, before Optuna reads it (which
    may fail on any later query, with a traceback)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=120)
        try:
            found = [row[0] for row in con.execute("PRAGMA quick_check").fetchall()]
        finally:
            con.close()
        problem = None if found == ["ok"] else "; ".join(map(str, found[:2]))
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
    if problem:
        raise ConfigError(f"the study file {path} is damaged ({problem}; cut short?): restore it from a copy, or move "
                          "it away to start the study over (finished trials' run records are found and reused)")


def repair_journal(path: Path, lock: Any = None) -> None:
    """A journal whose last entry is cut short (its writer killed mid-line, a copy that stopped): the cut bytes move
    to <journal>.cut and the study continues from the last complete entry, with one warning line (left as it
    was, the next entry would be appended onto the cut one, damaging both). A damaged entry before the last is one
    line naming the file and the line (ConfigError). Done under the journal's lock: a line being written by a live
    worker is not cut."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    import json
    import sys

    if lock is not None:
        lock.acquire()
    try:
        data = path.read_bytes()
        *lines, tail = data.split(b"\n")
        for i, line in enumerate(lines, 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError:
                    raise ConfigError(f"the study journal {path} is damaged at line {i} of {len(lines) + bool(tail)} "
                                      "(not a JSON entry): restore it from a copy, or move it away to start the "
                                      "study over") from None
        if not tail.strip():
            return
        try:
            json.loads(tail)
            complete = True
        except ValueError:
            complete = False
        with open(path, "r+b") as f:
            if complete:  # only its newline is missing
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                with open(path.with_name(path.name + ".cut"), "ab") as kept:
                    kept.write(tail + b"\n")
                f.truncate(len(data) - len(tail))
            f.flush()
            os.fsync(f.fileno())
        if not complete:
            print(f"warning: the study journal {path} ended with a cut entry ({len(tail)} bytes, kept in "
                  f"{path.name}.cut): the study continues from its last complete entry", file=sys.stderr)
    finally:
        if lock is not None:
            lock.release()


def make_storage(url: str, heartbeat: int = 60, grace: int | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: an RDB URL (SQLite, PostgreSQL, MySQL) or journal:///path/file.log. Every
    running trial sends a heartbeat each ``heartbeat`` seconds; one silent for ``grace`` seconds (null: 3 x
    heartbeat) is marked failed (fail_kind lost) by the next worker that looks, and queued again."""
    grace = grace or 3 * heartbeat
    try:
        if url.startswith("journal:"):
            path = url[len("journal:"):]
            path = path[2:] if path.startswith("//") else path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend

            lock = _KernelLock(path)
            works = lock.works()
            repair_journal(Path(path), lock if works else None)
            return _JournalStorage(JournalFileBackend(path, lock if works else None), heartbeat, grace)
        if "://" not in url:
            raise ConfigError(f"storage={url}: expected an Optuna storage URL: sqlite:///file.db, "
                              f"postgresql://user:pass@host/db, mysql+pymysql://user:pass@host/db or "
                              f"journal:///path/file.log")
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            check_sqlite(Path(url[len("sqlite:///"):]))
            engine_kwargs = {"connect_args": {"timeout": 120}}  # several local workers write to one file
        elif url.startswith(("postgresql", "postgres", "mysql")):
            engine_kwargs = {"pool_pre_ping": True}  # a server restarted between trials: reconnect, not fail
        kw = "heartbeat_stale_trial_callback"
        if kw not in inspect.signature(optuna.storages.RDBStorage).parameters:
            kw = "failed_trial_callback"  # Optuna < 4.9
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = _RDBStorage(_rdb_url(url), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                          grace_period=grace, **{kw: _retry_stale})
                storage.grace = grace
                return storage
            except Exception as exc:
                # Workers started together on an empty database all create Optuna's tables; the losers of that
                # race see a duplicate key: the tables exist now, so the next attempt just opens them.
                import sqlalchemy.exc as sa

                if attempt == 4 or not isinstance(exc, sa.IntegrityError | sa.ProgrammingError):
                    raise
                time.sleep(0.5 + random.random())
        raise AssertionError("unreachable")
    except ConfigError:
        raise
    except Exception as exc:  # missing driver, unreachable server, bad URL
        if is_storage_error(exc):
            raise unavailable(url, exc) from None
        hint = ""
        if isinstance(exc, ModuleNotFoundError) or "No module named" in str(exc):
            hint = " (PostgreSQL: pip install 'ssl_bench[postgres]')" if "postgres" in url else ""
        raise ConfigError(f"storage={redact(url)}: cannot open it: {type(exc).__name__}: "
                          f"{(str(exc).strip().splitlines() or [''])[0]}{hint}") from None


@contextmanager
def planning(storage: optuna.storages.BaseStorage, study: str, patience: float = 60.0) -> Iterator[None]:
    """One worker at a time plans a study (reads its trials, queues missing cells): workers started together
    would otherwise each queue every cell. The lock is a marker study, whose creation every Optuna storage makes
    atomic (a unique name); one left by a worker killed while planning is broken after ``patience`` seconds."""
    name = f"{study}:ssl_bench-planning"
    optuna.logging.disable_default_handler()  # "A new study created ..." for the marker is no news
    directions = [optuna.study.StudyDirection.MINIMIZE]
    since = time.monotonic()
    try:
        marker = _take(storage, directions, name, since, patience)
    finally:
        optuna.logging.enable_default_handler()
    try:
        yield
    finally:
        try:
            storage.delete_study(marker)
        except KeyError:
            pass


def _take(storage: optuna.storages.BaseStorage, directions: list, name: str, since: float, patience: float) -> int:
    while True:
        try:
            return storage.create_new_study(directions, name)
        except optuna.exceptions.DuplicatedStudyError:
            if time.monotonic() - since > patience:
                try:
                    storage.delete_study(storage.get_study_id_from_name(name))
                except KeyError:
                    pass
                since = time.monotonic()
            time.sleep(0.1 + 0.2 * random.random())


def fail_stale(study: optuna.Study) -> None:
    """Trials of dead workers (no heartbeat for the grace period) -> failed, and queued again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def grid_left(study: optuna.Study, poll: float, say: Any = print) -> bool:
    """A grid worker with nothing queued: wait while other workers' trials run (one of them may die and be
    queued again, here), then say whether there is a queued trial to take. False: the grid is done."""
    said = False
    while True:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False, states=(States.WAITING, States.RUNNING))
        if any(t.state == States.WAITING for t in trials):
            return True
        if not trials:
            return False
        if not said:
            say(f"[sweep {study.study_name}] nothing queued; waiting for {len(trials)} running trial(s) of other "
                "workers (one whose worker dies is retried here)", flush=True)
            said = True
        time.sleep(poll)


def open_study(sw: Sweep) -> optuna.Study:
    """Create the study or continue it; refuse to continue one made for another base config or objective."""
    study = optuna.create_study(study_name=sw.study, storage=make_storage(sw.storage, sw.heartbeat, sw.grace_period),
                                sampler=make_sampler(sw.sampler, sw.params), pruner=make_pruner(sw.pruner),
                                direction=sw.direction, load_if_exists=True)
    meta = study.user_attrs.get(META)
    if meta is None:
        study.set_user_attr(META, sw.meta)
        return study
    for key in ("base", "objective", "direction"):
        if meta.get(key) != sw.meta[key]:
            raise ConfigError(f"study '{sw.study}' was made with {key} {meta.get(key)}, this command has "
                              f"{sw.meta[key]}: use the same settings or another study_name=<name>")
    if meta != sw.meta:
        study.set_user_attr(META, sw.meta)  # e.g. a changed search space or plot_params
    return study


def _cell(t: optuna.trial.FrozenTrial, names: list[str]) -> tuple | None:
    # A queued cell's fixed_params first: a trial still suggesting has only some of its params, and read from those
    # alone its cell looked free, so a worker starting then queued it a second time (a rare CI failure).
    params = {**t.params, **(t.system_attrs.get("fixed_params") or {})}
    return tuple(params[n] for n in names) if all(n in params for n in names) else None


def plan_trials(study: optuna.Study, sw: Sweep) -> int:
    """How many trials to run now. A grid: each cell without a finished trial and not already queued or running
    is queued (cells whose trials only failed for a RETRYABLE reason count as not finished); the default is
    the number of queued cells."""
    fail_stale(study)
    if sw.sampler["type"] != "grid":
        return sw.n_trials if sw.n_trials is not None else DEFAULT_N_TRIALS
    with planning(study._storage, study.study_name):
        return _plan_grid(study, sw)


def _plan_grid(study: optuna.Study, sw: Sweep) -> int:
    names = list(sw.params)
    done, busy, waiting = set(), set(), 0
    for t in study.get_trials(deepcopy=False):
        cell = _cell(t, names)
        if cell is None:
            continue
        if t.state in (States.WAITING, States.RUNNING):
            busy.add(cell)
            waiting += t.state == States.WAITING
        elif not (t.state == States.FAIL and t.user_attrs.get("fail_kind") in RETRYABLE):
            done.add(cell)
    todo = [c for c in itertools.product(*(sw.params[n].choices for n in names)) if c not in done | busy]
    for cell in todo:
        study.enqueue_trial(dict(zip(names, cell, strict=True)))
    return sw.n_trials if sw.n_trials is not None else waiting + len(todo)

