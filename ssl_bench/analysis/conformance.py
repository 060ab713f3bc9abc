"""Does an objective behave? ``ssl-bench check-method <name>`` (or ``python -m ssl_bench check-method <name>``) runs,
on the CPU in well under two minutes, the checks every objective must pass, shipped or from another package:

    config      bad values are refused with one line (ConfigError), never a traceback
    crops       a finite loss on random crops of every crop count (2 global; 2 + 2 local; 2 + 6 local)
    gradients   the loss's gradient reaches the backbone, finite
    resume      killed mid-epoch (SIGTERM, as a scheduler's time limit) and resumed: the uninterrupted run's weights
                and every epoch's numbers
    seed        the same seed gives the same numbers (the objective twice; the loop's first epoch twice)
    diagnostics assign_entropy and prototypes_used in every epoch's record if it clusters (has prototypes)
    teacher     a momentum teacher, if it asks for one: a copy outside the optimiser, without gradients, averaged at the
                scheduled momentum (its resume is the resume check's: the teacher is in the checkpoint)
    processes   one process = two processes (gloo, the same global batch) within the measured round-off

It prints a table of the checks and exits non-zero when one fails. In a test: ``check_method("swav").passed``.
The loop checks share one tiny run per method (the smoke budget, 2 epochs of 4 steps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.analysis.objective_checks import (  # noqa: F401  (CROP_COUNTS: one of this module's names)
    CROP_COUNTS,
    CheckFailed,
    check_config,
    check_crops,
    check_gradients,
    check_teacher,
    one_line,
    same_step,
)
from ssl_bench.errors import ConfigError, TrainingStopped

USAGE = "usage: ssl-bench check-method <name> [processes=1|2] [workdir=<dir>]"
# Two processes sum in another order (round-off ~1e-7); 8 steps at the smoke lr (0.05) amplify that to ~1e-4, which
# would hide a real difference of that size: the loop checks run at lr 0.005 (as tests/test_distributed.py).
LOOP_OVERRIDES = ("budget=smoke", "eval.random_baseline=false", "optim.lr=0.005", "health.samples=0",
                  "eval.monitor_train_subset=0")
KILL_AT_STEP = 6  # of 8: mid-epoch 2, so epoch 1's row is in both records
CLUSTER_KEYS = ("assign_entropy", "prototypes_used")
# How far one process may be from two (process_gaps' numbers), measured by `python -m benchmarks.kernel_spread --only
# processes` (every method, one vs two processes, on five CPU kernel paths): the worst natural gap is DeepCluster-v2's
# on the portable kernels (loss 1.2e-3, weights 0.025: a k-means assignment that flips with the summation order), the
# smallest planted defect's (SwAV's Sinkhorn without its all-reduce) loss 0.03, weights 0.48, entropy 0.044. Each
# tolerance sits about 4x above the one and 5x below the other; the counts' worst natural gap was 0.
PROCESS_TOLERANCE = {"loss": 5e-3, "assign_entropy": 1e-2, "prototypes_used": 2.0, "weights": 0.1}


@dataclass
class Result:
    check: str
    status: str  # pass, FAIL or skip
    seconds: float
    detail: str


@dataclass
class Report:
    method: str
    results: list[Result] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.status != "FAIL" for r in self.results)

    def table(self) -> str:
        width = max(len(r.check) for r in self.results)
        rows = [f"  {r.check:<{width}}  {r.status:<4}  {r.seconds:5.1f}s  {r.detail}" for r in self.results]
        count = {s: sum(r.status == s for r in self.results) for s in ("pass", "FAIL", "skip")}
        total = sum(r.seconds for r in self.results)
        tally = f"{count['pass']} pass" + (f", {count['skip']} not applicable" if count["skip"] else "")
        verdict = (f"{self.method}: no check fails ({tally})" if not count["FAIL"]
                   else f"{self.method}: {count['FAIL']} of {len(self.results)} checks FAIL ({tally})")
        return "\n".join([f"check-method {self.method}", f"  {'check':<{width}}  result   time  detail", *rows,
                          f"{verdict} in {total:.0f} s"])

    __str__ = table


def _timed(report: Report, check: str, fn: Callable[[], str | None]) -> None:
    start = time.perf_counter()
    try:
        detail = fn()
        status = "skip" if detail and detail.startswith("n/a") else "pass"
    except CheckFailed as exc:
        status, detail = "FAIL", str(exc)
    except Exception as exc:  # the objective's own error: a finding, in one line
        status, detail = "FAIL", one_line(exc)
    report.results.append(Result(check, status, time.perf_counter() - start, detail or ""))


# -- the loop: one tiny run, killed and resumed, and on two processes ---------------------------------------------
@contextlib.contextmanager
def _sigterm_at_step(n: int) -> Iterator[None]:
    """The n-th training step sends this process SIGTERM (as a scheduler's time limit would)."""
    from ssl_bench.training.loop import Trainer

    real, calls = Trainer.train_step, [0]

    def step(self: Any, batch: dict) -> Any:
        out = real(self, batch)
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    Trainer.train_step = step  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer.train_step = real  # type: ignore[method-assign]


@contextlib.contextmanager
def _cpu_only() -> Iterator[None]:
    """The in-process runs on the CPU as the two-process one (Accelerate reads this), even on a machine with a GPU.
    Accelerate keeps its device for the process: a single process's state is reset on entry and exit, so runs before
    and after the check keep theirs."""
    from accelerate.state import PartialState

    def reset() -> None:
        if PartialState._shared_state.get("num_processes", 1) == 1:
            PartialState._reset_state()

    before = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "1"
    reset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = before
        reset()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny models: a second thread only spins (the smoke budget's runs set one thread too; 6x faster under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_dir(root: Path) -> Path:
    found = sorted(p.parent for p in root.glob("*/summary.json"))
    if len(found) != 1:
        raise CheckFailed(f"expected one finished run in {root}, found {len(found)}")
    return found[0]


def _weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run / "checkpoint" / "model.safetensors")


def _loop_overrides(name: str, out: Path) -> list[str]:
    return [*LOOP_OVERRIDES, f"method={name}", f"output_dir={out}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch_two(name: str, out: Path) -> subprocess.Popen:
    """``accelerate launch`` of the same run on two CPU processes (gloo), in the background."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "ssl_bench.run", *_loop_overrides(name, out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _train(cfg: Any) -> None:
    from ssl_bench.common.progress import configure
    from ssl_bench.pipeline.experiment import run_experiment

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        configure(False)
        run_experiment(cfg)


def _metrics(run: Path) -> list[dict]:
    from ssl_bench.records.io import read_metrics

    return read_metrics(run)


def check_resume(name: str, work: Path) -> str:
    import torch

    from ssl_bench.config.compose import compose

    full_cfg = compose(_loop_overrides(name, work / "one"))
    _train(full_cfg)
    cut_overrides = _loop_overrides(name, work / "cut")
    with _sigterm_at_step(KILL_AT_STEP):
        try:
            _train(compose(cut_overrides))
        except TrainingStopped:
            pass
        else:
            raise CheckFailed(f"SIGTERM at step {KILL_AT_STEP} did not stop the run")
    _train(compose([*cut_overrides, "resume=true"]))
    a, b = _weights(_run_dir(work / "one")), _weights(_run_dir(work / "cut"))
    if a.keys() != b.keys():
        raise CheckFailed(f"the resumed checkpoint holds other tensors: {sorted(set(a) ^ set(b))[:3]}")
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if differ:
        raise CheckFailed(f"resumed != uninterrupted: {len(differ)} tensors differ, first {differ[0]}")
    rows = [(x, y) for x, y in zip(_metrics(_run_dir(work / "one")), _metrics(_run_dir(work / "cut")), strict=True)]
    for x, y in rows:  # every epoch's numbers too, the interrupted one's mean loss included
        bad = [k for k in _numbers(x) if x.get(k) != y.get(k)]
        if bad:
            k = bad[0]
            raise CheckFailed(f"resumed != uninterrupted in epoch {x['epoch'] + 1}'s {k}: {x[k]} vs {y.get(k)}")
    return (f"killed at step {KILL_AT_STEP} of 8, resumed: {len(a)} tensors and {len(rows)} epochs' numbers equal to "
            "the uninterrupted run's")


def _numbers(row: dict) -> list[str]:
    """A metrics row's keys that a rerun must reproduce (not timings)."""
    return [k for k in row if not any(w in k for w in ("wall", "per_s", "time", "memory"))]


def check_seed(name: str, work: Path) -> str:
    """The objective twice from one seed, and the loop's first epoch in two runs (the uninterrupted and the killed
    one, which train epoch 1 independently): the same numbers, exactly."""
    objective = same_step(name)
    one, cut = _metrics(_run_dir(work / "one"))[0], _metrics(_run_dir(work / "cut"))[0]
    keys = _numbers(one)
    differ = [k for k in keys if one.get(k) != cut.get(k)]
    if differ:
        k = differ[0]
        raise CheckFailed(f"epoch 1 of two runs of one seed differs in {k}: {one[k]} vs {cut.get(k)}")
    return f"{objective}; loop: epoch 1 equal in {len(keys)} numbers"


def check_processes(proc: subprocess.Popen | None, work: Path, timeout: float = 300) -> str:
    if proc is None:
        return "n/a (processes=1)"
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise CheckFailed(f"two processes did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise CheckFailed(f"two processes exited {proc.returncode}: {last[0][:200]}")
    one, two = _run_dir(work / "one"), _run_dir(work / "two")
    gaps = process_gaps(one, two)
    over = [k for k, tol in PROCESS_TOLERANCE.items() if gaps.get(k, 0.0) > tol]
    if over:
        k = over[0]
        raise CheckFailed(f"one process and two differ in {k} by {gaps[k]:.2g} (tolerance {PROCESS_TOLERANCE[k]:g}; "
                    f"{_GAP_WORDS[k]})")
    return (f"losses and {gaps['tensors']:.0f} tensors agree (gloo, 2 x half the batch; largest gap "
            f"{gaps['loss']:.1g} of the loss, {gaps['weights']:.1g} of a weight tensor's scale)")


_GAP_WORDS = {"loss": "relative, worst epoch", "weights": "largest |difference| / the tensor's largest |value|",
              **dict.fromkeys(CLUSTER_KEYS, "absolute, worst epoch")}


def process_gaps(one: Path, two: Path) -> dict[str, float]:
    """The largest differences between a run on one process and the same run on two: the loss relative, the cluster
    diagnostics absolute (worst epoch), and the trained weights as max |a - b| / max |a| per floating tensor (worst
    tensor; an integer tensor that differs counts as infinity). Raises CheckFailed when the records do not match up."""
    import torch

    gaps = {"loss": 0.0, **dict.fromkeys(CLUSTER_KEYS, 0.0), "weights": 0.0}
    ra, rb = _metrics(one), _metrics(two)
    if len(ra) != len(rb):
        raise CheckFailed(f"one process recorded {len(ra)} epochs, two {len(rb)}")
    for x, y in zip(ra, rb, strict=True):
        for key in ("loss", *CLUSTER_KEYS):
            if isinstance(x.get(key), int | float):
                if not isinstance(y.get(key), int | float):
                    raise CheckFailed(f"epoch {x['epoch'] + 1}: two processes recorded no {key}")
                d = abs(y[key] - x[key]) / (max(abs(x[key]), 1e-12) if key == "loss" else 1.0)
                gaps[key] = max(gaps[key], d)
    a, b = _weights(one), _weights(two)
    if a.keys() != b.keys():
        raise CheckFailed(f"two processes saved other tensors: {sorted(set(a) ^ set(b))[:3]}")
    for k in a:
        if a[k].is_floating_point():
            scale = a[k].abs().max().item()
            d = (a[k] - b[k]).abs().max().item() / scale if scale > 0 else (a[k] - b[k]).abs().max().item()
        else:
            d = 0.0 if torch.equal(a[k], b[k]) else math.inf
        gaps["weights"] = max(gaps["weights"], d)
    gaps["tensors"] = float(len(a))
    return gaps


def check_diagnostics(name: str, work: Path) -> str:
    from ssl_bench.config.registry import registry

    clusters = any(f.name == "num_prototypes" for f in dataclasses.fields(registry()[name].config))
    if not clusters:
        return "n/a (no prototypes: method.num_prototypes is not a key)"
    rows = _metrics(_run_dir(work / "one"))
    missing = [k for k in CLUSTER_KEYS if not all(k in r for r in rows)]
    if missing:
        raise CheckFailed(f"a clustering method's records lack {missing[0]} (return it from epoch_stats)")
    last = rows[-1]
    return ", ".join(f"{k}={last[k]:.3g}" for k in CLUSTER_KEYS)


def check_method(name: str, processes: int = 2, workdir: str | Path | None = None) -> Report:
    """Run every check on ``name`` and return the report (``.passed``, ``.table()``). An unknown name is a
    ConfigError naming the valid ones."""
    from ssl_bench.config.registry import load_plugins, registry

    methods = registry()
    if name not in methods:
        broken = load_plugins().get(name)  # a plug-in that failed to load: say why
        raise ConfigError(broken or f"unknown method '{name}'; valid choices: {', '.join(methods)}")
    report = Report(name)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_cpu_only())
        stack.enter_context(_one_thread())
        if workdir:  # kept for a look afterwards; a folder of its own, so an earlier check's runs are never reused
            Path(workdir).mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="check-")))
        _timed(report, "config", lambda: check_config(name))
        if report.results[-1].status == "FAIL":
            return report  # nothing else composes
        proc = _launch_two(name, work / "two") if processes == 2 else None
        try:
            _timed(report, "crops", lambda: check_crops(name))
            _timed(report, "gradients", lambda: check_gradients(name))
            _timed(report, "resume", lambda: check_resume(name, work))
            _timed(report, "seed", lambda: check_seed(name, work))
            _timed(report, "diagnostics", lambda: check_diagnostics(name, work))
            _timed(report, "teacher", lambda: check_teacher(name))
            _timed(report, "processes", lambda: check_processes(proc, work))
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    return report


def main(argv: list[str]) -> int:
    """``check-method <name> [processes=1|2] [workdir=<dir>]``: 0 when every check passes, 1 when one fails."""
    if argv and argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}".rstrip())
        return 0
    if not argv or "=" in argv[0]:
        from ssl_bench.config.registry import registry

        raise ConfigError(f"a method name is required ({USAGE}); valid choices: {', '.join(registry())}")
    name, options = argv[0], {}
    for a in argv[1:]:
        key, eq, value = a.partition("=")
        if not eq or key not in ("processes", "workdir"):
            raise ConfigError(f"cannot read '{a}'; valid keys: processes=1|2, workdir=<dir> ({USAGE})")
        options[key] = value
    processes = options.get("processes", "2")
    if processes not in ("1", "2"):
        raise ConfigError(f"processes must be 1 or 2, got '{processes}'")
    report = check_method(name, int(processes), options.get("workdir"))
    print(report.table())
    return 0 if report.passed else 1


