"""The console output and tables the docs quote, generated (issue 30, "words generated, never typed"): every quoted
command of a smoke-budget walkthrough runs here exactly as its page shows it, in a fresh temporary folder, and its
output goes to ``docs/snippets/<name>.txt`` (or ``.md``), which the page includes with ``--8<--``.

    .venv/bin/python -m benchmarks.doc_outputs              # all of them (a few minutes on 2 cores)
    .venv/bin/python -m benchmarks.doc_outputs --only gs    # the snippets whose name starts with 'gs'

``--only`` runs only the walkthroughs that write such a snippet (each walkthrough's names share its prefix: ``gs``,
``cmp``, ``sw``, ``sl``, ``in``), and writes only those snippets.

Run it from the repository root with ``PYTHONPATH=.`` (the commands import this checkout). Every run is pinned to one
thread (``train.num_threads=1`` on the page's command, and ``OMP_NUM_THREADS=1``), so a run's numbers are those of
this code on this kernel path (see ``python -m ssl_bench.reference verify``): a snippet changes when the code does.

What is normalised, so that running it again on the same code gives the same files: speeds and times
(``images_per_s``, ``wall_s``, ``wall N s``, ``N images/s``, ``peak memory``, the table columns ``wall (s)``,
``images/s``, ``peak mem (MB)``, ``duration_s`` of a sweep's trials, Optuna's log timestamps) become ``…``; the
temporary folder becomes ``$PWD``. Long outputs are trimmed where a page says so, with a ``[... trimmed ...]`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "docs" / "snippets"
SMOKE_RUN = "swav-fashion_mnist-smoke-s0-af9f570d"  # the first tutorial's first run: its folder name, on the pages

# Units that measure this machine's speed, not the record: replaced by '…'.
_TIMINGS = [
    (re.compile(r"(images_per_s|wall_s)=[0-9.e+-]+"), r"\1=…"),
    (re.compile(r"wall [0-9.]+ s, [0-9.]+ images/s, peak memory [0-9.]+ MB"), "wall … s, … images/s, peak memory … MB"),
    (re.compile(r"^\[([IWE]) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\]", re.M), r"[\1 …]"),
]
_TIMING_COLUMNS = ("wall (s)", "images/s", "peak mem (MB)", "duration_s")


def normalise(text: str, tmp: Path) -> str:
    """Timings to '…', the temporary folder to $PWD, timing columns of Markdown tables to '…'."""
    for folder in {str(tmp), str(tmp.resolve())}:
        text = text.replace(folder, "$PWD")
    for pattern, repl in _TIMINGS:
        text = pattern.sub(repl, text)
    lines, cols = text.split("\n"), []
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            cols = []
            continue
        cells = line.split("|")
        if not cols:
            cols = [j for j, c in enumerate(cells) if c.strip() in _TIMING_COLUMNS]
        elif not set(line) <= set("|- "):
            for j in cols:
                if j < len(cells) - 1:
                    cells[j] = " … " if cells[j].startswith(" ") else "…"
            lines[i] = "|".join(cells)
    return "\n".join(lines)


def keep(head: int, tail: int, what: str) -> Callable[[str], str]:
    """The first ``head`` and the last ``tail`` lines, with one line saying what was trimmed between them."""
    def trim(text: str) -> str:
        lines = text.rstrip("\n").split("\n")
        if len(lines) <= head + tail:
            return text
        return "\n".join(lines[:head] + [f"[... trimmed: {what} ...]"] + (lines[-tail:] if tail else [])) + "\n"
    return trim


def before(marker: str, what: str) -> Callable[[str], str]:
    """The lines before the first line starting with ``marker``, then one line saying what was trimmed."""
    def trim(text: str) -> str:
        lines = text.rstrip("\n").split("\n")
        cut = next((i for i, line in enumerate(lines) if line.startswith(marker)), len(lines))
        return "\n".join(lines[:cut] + ([f"[... trimmed: {what} ...]"] if cut < len(lines) else [])) + "\n"
    return trim


def after(marker: str, what: str) -> Callable[[str], str]:
    """One line saying what was trimmed, then the lines after the first line starting with ``marker``."""
    def trim(text: str) -> str:
        lines = text.rstrip("\n").split("\n")
        cut = next((i for i, line in enumerate(lines) if line.startswith(marker)), None)
        return text if cut is None else "\n".join([f"[... trimmed: {what} ...]"] + lines[cut + 1:]) + "\n"
    return trim


def until(marker: str, what: str, then: int = 1) -> Callable[[str], str]:
    """The lines before the first line starting with ``marker``, a trimmed line, then the last ``then`` lines."""
    def trim(text: str) -> str:
        lines = text.rstrip("\n").split("\n")
        cut = next((i for i, line in enumerate(lines) if line.startswith(marker)), len(lines))
        return "\n".join(lines[:cut] + [f"[... trimmed: {what} ...]"] + lines[-then:]) + "\n"
    return trim


@dataclass
class Snippet:
    name: str  # docs/snippets/<name>; "" runs the command and writes nothing (its output is not quoted)
    # As the page shows it ('python' and 'accelerate' are this environment's), one or more lines run by bash -e; a
    # path (no blank in it) is a file the page shows: it is read, not run.
    command: str
    trim: Callable[[str], str] | None = None
    exit_code: int = 0


@dataclass
class Wait:
    """Not a command of the page: wait (up to ``timeout`` s) until ``ready(folder)`` holds, e.g. for background jobs."""

    what: str
    ready: Callable[[Path], bool]
    timeout: float = 1800


@dataclass
class Walkthrough:
    """Commands that run one after another in one fresh folder (a later one reads an earlier one's records)."""

    name: str
    snippets: list[Snippet | Wait]
    files: dict[str, str] = field(default_factory=dict)  # folder-relative path -> docs/snippets file copied there
    env: dict[str, str] = field(default_factory=dict)  # '$PWD' is the folder
    cleanup: Callable[[Path, dict[str, str]], None] | None = None  # always, at the end (e.g. cancel live jobs)


PY_GROUPBY = ("from ssl_bench import api; runs = api.load('results'); "
              "print(runs.groupby('method')['metrics.knn_top1'].agg(['mean', 'std', 'count']))")
COMPARE = ("python -m ssl_bench.compare methods=[swav,simclr,deepclusterv2,selav2,carl] dataset=fashion_mnist "
           "budget=smoke seeds=[0,1,2] train.num_threads=1")
SWEEP = ("python -m ssl_bench.sweep sweep=simclr_temperature_lr method=simclr dataset=fashion_mnist budget=smoke "
         "train.num_threads=1")

STUDY = "simclr_temperature_lr-simclr-fashion_mnist-smoke"

# The SLURM tutorial (docs/tutorials/compare-on-a-slurm-cluster.md): the stand-ins of tests/fake_slurm run the jobs
# here, one at a time, and the first run waits at step 6 (epoch 2, batch 2: the test hook of
# ssl_bench.training.signals) for the page's `scancel --signal=USR1 --batch 1001`, so every status the page quotes is
# the same on every generation.
FAKE_SLURM = ROOT / "tests" / "fake_slurm"
FIVE = "name=five-methods methods=[swav,simclr,deepclusterv2,selav2,carl] seeds=[0,1,2] cluster=slurm dataset=imagenet"
CLUSTER = "dataset.root=/data/imagenet budget=imagenet_400ep nodes=8 gpus=8"
HERE = "dataset.root=data/tiny-imagenet budget=smoke crops.global.size=64 crops.local.size=32 train.num_threads=1"
SLURM_COMPARE = f"python -m ssl_bench.compare {FIVE} {HERE}"
PLAN_LINE = "comparison five-methods: 15 runs (1 variant"
NO_RUNS = "the runs and an empty table: no run has a record yet"


# The ImageNet tutorial (docs/tutorials/imagenet-on-n-nodes.md): what prepares a cluster run (configs, launch lines, an
# sbatch script) runs with ImageNet's real paths; the 2-node stand-in runs both launchers on this machine (machine 1's
# in the background) on the tiny ImageNet-shaped folder; the SIGTERM stop comes at a known step (the test hook of
# ssl_bench.training.signals holds the run there until the page's `kill -TERM`), so the stopped and resumed outputs
# are the same on every generation. Only the 40-epoch run reaches that step.
IN_400 = "method=swav budget=imagenet_400ep dataset=imagenet dataset.root=/data/imagenet"
IN_STANDIN = ("method=swav budget=smoke dataset=imagenet dataset.root=data/tiny-imagenet dataset.num_classes=10 "
              "crops.global.size=64 crops.local.size=32 train.num_threads=1")
IN_PORT = 29556


def _in_machine(rank: int) -> str:
    """Machine ``rank``'s line of the 2-node stand-in, as ``ssl_bench.launch`` prints it (tests/test_docs.py checks)."""
    return (f"accelerate launch -q --multi_gpu --num_machines 2 --num_processes 2 --machine_rank {rank} "
            f"--main_process_ip 127.0.0.1 --main_process_port {IN_PORT} --rdzv_backend static --same_network "
            f"-m ssl_bench.run {IN_STANDIN}")


IN_TWO_NODES = "\n".join(["export ACCELERATE_USE_CPU=1", f"{_in_machine(1)} > machine1.log 2>&1 &", _in_machine(0),
                          "wait"])
IN_STOP_RUN = ("python -m ssl_bench.run method=swav dataset=fashion_mnist budget=smoke train.epochs=40 "
               "train.num_threads=1")
IN_PAUSE_STEP = 70  # epoch 18 of 40 (4 steps each), batch 2


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not): Linux's /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _background_pid(folder: Path) -> int | None:
    pid = folder / "swav-40.pid"
    return int(pid.read_text()) if pid.is_file() else None


def _stopped(folder: Path) -> bool:
    log, pid = folder / "swav-40.log", _background_pid(folder)
    return log.is_file() and "continue with resume=true" in log.read_text() and pid is not None and not _alive(pid)


def _stop_background_run(folder: Path, env: dict[str, str]) -> None:
    pid = _background_pid(folder)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)


def _jobs(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (folder / ".slurm").glob("*.json")]


def _all_ended(folder: Path) -> bool:
    jobs = _jobs(folder)
    return bool(jobs) and all(j["state"] not in ("PENDING", "RUNNING") for j in jobs)


def _cancel_live_jobs(folder: Path, env: dict[str, str]) -> None:
    for job in _jobs(folder):
        if job["state"] in ("PENDING", "RUNNING"):
            subprocess.run([str(FAKE_SLURM / "scancel"), str(job["id"])], env=env, capture_output=True)


WALKTHROUGHS = [
    Walkthrough("gs", [
        Snippet("gs-first-run.txt",
                "accelerate launch -q -m ssl_bench.run method=swav dataset=fashion_mnist budget=smoke "
                "train.num_threads=1"),
        Snippet("gs-ls.txt", f"ls results/runs/{SMOKE_RUN}/"),
    ]),
    Walkthrough("cmp", [
        Snippet("cmp-compare.txt", COMPARE, until("[2/15]", "runs 2 to 15, each as run 1, and the table, shown below")),
        Snippet("cmp-table.md", "results/compare/compare-fashion_mnist-smoke/table.md"),
        Snippet("gs-groupby.txt", f"python -c \"{PY_GROUPBY}\""),
        Snippet("cmp-plot.txt", "python -m ssl_bench.plot"),
        Snippet("cmp-evaluate.txt", f"python -m ssl_bench.evaluate checkpoint=results/runs/{SMOKE_RUN} eval=linear"),
    ]),
    Walkthrough("sw", [
        Snippet("sw-run.txt", SWEEP + " n_trials=6",
                until(f"[sweep {STUDY}] trial 1 ", "trials 1 to 5, each as trial 0", then=8)),
        Snippet("sw-continue.txt", SWEEP + " n_trials=4", keep(3, 2, "the runs of trials 6 to 9 and the report's "
                                                                     "file list, as above")),
        Snippet("sw-trials.md", "results/figures/simclr_temperature_lr-simclr-fashion_mnist-smoke/trials.md",
                lambda t: "\n".join(t.split("\n")[:5]) + "\n[... trimmed: the other trials and the caption ...]\n"),
        Snippet("sw-study.txt", "python -m ssl_bench.compare study=simclr_tuned dataset=fashion_mnist budget=smoke "
                                "train.num_threads=1", until("[2/6]", "the other five runs; the table follows",
                                                             then=1)),
        Snippet("sw-study-table.md", "results/compare/simclr_tuned-fashion_mnist-smoke/table.md"),
    ], files={"my_configs/sweep/simclr_temperature_lr.yaml": "simclr_temperature_lr.yaml",
              "my_configs/study/simclr_tuned.yaml": "simclr_tuned.yaml"},
        env={"SSL_BENCH_CONFIG_PATH": "$PWD/my_configs"}),
    Walkthrough("sl", [
        Snippet("sl-data.txt", "python -m benchmarks.tiny_imagenet data/tiny-imagenet"),
        Snippet("sl-cost.txt", f"python -m ssl_bench.compare {FIVE} {CLUSTER} train=false",
                before(PLAN_LINE, NO_RUNS)),
        Snippet("sl-submit.txt", SLURM_COMPARE),
        Wait("the first job at step 6", lambda f: (f / ".paused").exists()),
        Snippet("sl-status.txt", f"{SLURM_COMPARE} train=false", before(PLAN_LINE, NO_RUNS)),
        Snippet("", "scancel --signal=USR1 --batch 1001"),
        Wait("every job ended", _all_ended),
        Snippet("sl-log.txt", "grep -h -e SIGUSR1 -e 'interrupted at' -e 'resumed at' -e '^record:' "
                              "results/compare/five-methods/jobs/swav-*-1001.out"),
        Snippet("sl-after.txt", f"{SLURM_COMPARE} train=false", until(PLAN_LINE, "the runs and the table, below")),
        Snippet("sl-table.md", "results/compare/five-methods/table.md"),
    ], env={"PATH": f"{FAKE_SLURM}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_SLURM_DIR": "$PWD/.slurm", "FAKE_SLURM_SLOTS": "1", "SSL_BENCH_PAUSE_AT_STEP": "6:$PWD/.paused"},
        cleanup=_cancel_live_jobs),
    Walkthrough("in", [
        Snippet("in-no-root.txt", "python -m ssl_bench.run method=swav dataset=imagenet budget=imagenet_400ep",
                exit_code=2),
        Snippet("in-cfg-train.txt", "python -m ssl_bench.run --cfg job -p train method=swav dataset=imagenet "
                                    "budget=imagenet_400ep dataset.root=/data/imagenet",
                until("max_steps_per_epoch:", "the keys at their defaults")),
        Snippet("in-launch-4x8.txt", f"python -m ssl_bench.launch nodes=4 gpus=8 address=10.0.0.1 port=29500 {IN_400}",
                before("# machine 2", "machines 2 and 3, the same with their --machine_rank")),
        Snippet("in-launch-3x8.txt", f"python -m ssl_bench.launch nodes=3 gpus=8 address=h {IN_400}", exit_code=2),
        Snippet("in-launch-bs256.txt", "python -m ssl_bench.launch nodes=1 gpus=4 method=swav budget=imagenet_bs256 "
                                       "dataset=imagenet dataset.root=/data/imagenet"),
        Snippet("in-data.txt", "python -m benchmarks.tiny_imagenet data/tiny-imagenet"),
        Snippet("in-launch-2x1.txt", f"python -m ssl_bench.launch nodes=2 gpus=1 address=127.0.0.1 port={IN_PORT} "
                                     f"{IN_STANDIN}"),
        Wait(f"port {IN_PORT} free", lambda f: _port_free(IN_PORT), timeout=120),
        Snippet("in-machine0.txt", IN_TWO_NODES,
                after("To avoid this warning", "Accelerate's note on the launch values it defaulted, 4 lines")),
        Snippet("in-machine1.txt", "machine1.log"),
        Snippet("", "python -m ssl_bench.launch nodes=4 gpus=8 slurm=true job=swav-in1k partition=gpu time=48:00:00 "
                    f"{IN_400} > swav.sbatch"),
        Snippet("in-sbatch.txt", "swav.sbatch"),
        Snippet("", "bash -n swav.sbatch"),
        Snippet("", f"{IN_STOP_RUN} > swav-40.log 2>&1 &\necho $! > swav-40.pid"),
        Wait(f"the 40-epoch run at step {IN_PAUSE_STEP}", lambda f: (f / ".paused").exists(), timeout=600),
        Snippet("", "kill -TERM $(cat swav-40.pid)"),
        Wait("the 40-epoch run stopped", _stopped, timeout=300),
        Snippet("in-stop.txt", "tail -n 2 swav-40.log"),
        Snippet("in-resume.txt", f"{IN_STOP_RUN} resume=true",
                until("epoch=18 ", "epochs 18 to 39 and the final evaluation")),
    ], env={"SSL_BENCH_PAUSE_AT_STEP": f"{IN_PAUSE_STEP}:$PWD/.paused"}, cleanup=_stop_background_run),
]


def _shell(command: str) -> bool:
    """Whether the command needs a shell: several lines, or an operator outside quotes (``>``, ``&``, ``;``, ``|``)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return "\n" in command.strip() or any(set(tok) <= set("();<>|&") for tok in lexer)


def _run_command(s: Snippet, folder: Path, env: dict[str, str], bin_dir: Path) -> str:
    """The snippet's command in ``folder``, or the file it names; its output. A lone ``python`` or ``accelerate``
    command runs as itself (this environment's); any other runs in ``bash -e`` with this environment first on PATH,
    so a glob, a redirection or a background job works as on the page, and a failing line stops it."""
    if not re.search(r"\s", s.command.strip()):  # a file the page shows
        return (folder / s.command).read_text()
    argv = shlex.split(s.command)
    if argv[0] in ("python", "accelerate") and not _shell(s.command):
        argv[0] = str(bin_dir / argv[0]) if argv[0] == "accelerate" else sys.executable
    else:
        argv = ["bash", "-e", "-c", s.command]
        env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    proc = subprocess.run(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=1800)
    if proc.returncode != s.exit_code:
        raise SystemExit(f"{s.name}: `{s.command}` exited {proc.returncode}:\n{proc.stdout[-3000:]}")
    return proc.stdout


def run_walkthrough(w: Walkthrough, only: str | None) -> list[tuple[Path, float]]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "COLUMNS": "200",
           "PYTHONUNBUFFERED": "1"}  # stdout and stderr in the order they were written
    written = []
    with tempfile.TemporaryDirectory(prefix=f"doc-{w.name}-") as tmp:
        folder = Path(tmp)
        env.update({k: v.replace("$PWD", str(folder)) for k, v in w.env.items()})
        for dest, src in w.files.items():
            (folder / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SNIPPETS / src, folder / dest)
        try:
            for s in w.snippets:
                start = time.perf_counter()
                if isinstance(s, Wait):
                    end = time.monotonic() + s.timeout
                    while not s.ready(folder):
                        if time.monotonic() > end:
                            raise SystemExit(f"{w.name}: timed out waiting for {s.what}")
                        time.sleep(0.5)
                    continue
                out = _run_command(s, folder, env, bin_dir)
                if not s.name or (only and not s.name.startswith(only)):
                    continue
                text = normalise(out, folder)
                text = s.trim(text) if s.trim else text
                SNIPPETS.mkdir(parents=True, exist_ok=True)
                (SNIPPETS / s.name).write_text(text if text.endswith("\n") else text + "\n")
                written.append((SNIPPETS / s.name, time.perf_counter() - start))
        finally:
            if w.cleanup is not None:
                w.cleanup(folder, env)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="only the snippets whose name starts with this (their walkthrough still runs)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for w in WALKTHROUGHS:
        if args.only and not any(isinstance(s, Snippet) and s.name and s.name.startswith(args.only)
                                 for s in w.snippets):
            continue
        for path, seconds in run_walkthrough(w, args.only):
            print(f"{path.relative_to(ROOT)} ({seconds:.0f} s)")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
