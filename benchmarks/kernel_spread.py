"""How far the suite's exact numbers move on another CPU kernel path (ssl_bench.common.kernels): the measurement behind
the tolerances of ssl_bench.analysis.verify.SPREAD, tests/test_speed.py's fused-optimiser check and check-method's
one-process-against-two check (ssl_bench.analysis.conformance.PROCESS_TOLERANCE).

    .venv/bin/python -m benchmarks.kernel_spread                     # all three
    .venv/bin/python -m benchmarks.kernel_spread --only optim        # the fused optimisers only (seconds)
    .venv/bin/python -m benchmarks.kernel_spread --only processes    # one process vs two, every method (~15 min)

Each kernel path is a child process with the variables that choose it (this machine's own path, the portable ATen
kernels, MKL's reproducible mode, both, and an AVX2 machine's choice on an AVX-512 one). Printed per path and number:
the largest difference from this machine's own path (relative for losses and entropies, absolute for counts and
accuracy points), then the worst over paths beside the tolerance in force and their ratio (a ratio under 1 means
the tolerance holds with room).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PATHS = {
    "own": {},
    "aten default": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "aten default + MKL_CBWR": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
    "AVX2 everywhere": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
RELATIVE = ("loss", "assign_entropy", "lambda_e")


def child_records() -> None:
    """In the child: the verify sample's epoch-1 numbers retrained on this process's path, as JSON lines."""
    from ssl_bench.analysis import verify
    from ssl_bench.records.io import REFERENCE_DIR, record_dirs

    for d in verify.sample(record_dirs(REFERENCE_DIR / "runs")):
        with tempfile.TemporaryDirectory() as tmp:
            c = verify.check_record(d, Path(tmp) / "w")
        print(json.dumps({"what": d.name.split("-")[0], "numbers": c.retrained}), flush=True)


def child_optim() -> None:
    """In the child: fused vs unfused optimisers (tests/test_speed.py's runs): the largest loss and weight gaps."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_speed import FUSED_SKIP, loop_steps

    for optim in ("sgd", "adamw"):
        over = [f"optim.name={optim}", "optim.lr=0.01"]
        with tempfile.TemporaryDirectory() as t:
            (la, sa), (lb, sb) = loop_steps(Path(t), [*over, "optim.fused=true"]), loop_steps(Path(t), over)
        skip = FUSED_SKIP.get(optim, ())
        print(json.dumps({"what": f"fused {optim}", "numbers": {
            "loss gap": max(abs(x - y) / max(1.0, abs(y)) for x, y in zip(la, lb, strict=True)),
            "weight gap": max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa if k not in skip)}}),
            flush=True)


DEFECTS = ("simclr", "swav")  # the two-process defects the process check must catch (see _patch_defect)


def _patch_defect(name: str) -> None:
    """A distributed bug planted in this process: SimCLR's negatives not gathered (each process contrasts against its
    own half of the batch), or SwAV's Sinkhorn without its all-reduce (each process balances its own half)."""
    import sys as _sys

    from ssl_bench.config.registry import registry

    module = _sys.modules[registry()[name].cls.__module__]
    if name == "simclr":
        module.all_gather = lambda t, grad=False: t
        module.world_size, module.rank = (lambda: 1), (lambda: 0)
    else:
        from ssl_bench.ops import sinkhorn

        sinkhorn.all_reduce_ = lambda t, op="sum": t
        sinkhorn.is_distributed = lambda: False


def defect_worker(name: str, out: str) -> None:
    """In each of two launched processes: the loop check's run of ``name`` with its defect planted."""
    from ssl_bench.analysis import conformance
    from ssl_bench.config.compose import compose

    _patch_defect(name)
    conformance._train(compose(conformance._loop_overrides(name, Path(out))))


def child_processes() -> None:
    """In the child: every method trained on one process (here) and on two (accelerate launch, gloo) at the
    check-method loop settings, and two defects on two processes; their process_gaps as JSON lines."""
    from ssl_bench.analysis import conformance
    from ssl_bench.config.compose import compose

    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp, conformance._cpu_only(), conformance._one_thread():
        work = Path(tmp)
        for name in SHIPPED:
            proc = conformance._launch_two(name, work / name / "two")
            conformance._train(compose(conformance._loop_overrides(name, work / name / "one")))
            _, err = proc.communicate(timeout=900)
            if proc.returncode:
                raise SystemExit(f"{name}: two processes exited {proc.returncode}: {err[-500:]}")
            gaps = conformance.process_gaps(conformance._run_dir(work / name / "one"),
                                            conformance._run_dir(work / name / "two"))
            print(json.dumps({"what": name, "numbers": gaps}), flush=True)
        for name in DEFECTS:
            out = work / name / "defect"
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                   str(conformance._free_port()), "-m", "benchmarks.kernel_spread", "--defect", name, str(out)]
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            gaps = conformance.process_gaps(conformance._run_dir(work / name / "one"), conformance._run_dir(out))
            print(json.dumps({"what": f"{name} with defect", "numbers": gaps}), flush=True)


SHIPPED = ("swav", "simclr", "deepclusterv2", "selav2", "carl")


def run_paths(kind: str) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, env in PATHS.items():
        proc = subprocess.run([sys.executable, "-m", "benchmarks.kernel_spread", "--child", kind],
                              env={**os.environ, **env, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
                              capture_output=True, text=True, check=True)
        out[name] = {r["what"]: r["numbers"] for r in map(json.loads, proc.stdout.splitlines()) if r}
        print(f"  measured: {name}", file=sys.stderr, flush=True)
    return out


def report_records(got: dict[str, dict[str, dict[str, float]]]) -> None:
    from ssl_bench.analysis.verify import SPREAD

    own = got["own"]
    worst: dict[str, float] = {}
    print("| kernel path | record | " + " | ".join(SPREAD) + " |\n|" + " --- |" * (len(SPREAD) + 2))
    for name, recs in got.items():
        if name == "own":
            continue
        for what, nums in recs.items():
            cells = []
            for key in SPREAD:
                if key not in nums or key not in own[what]:
                    cells.append("—")
                    continue
                a, b = nums[key], own[what][key]
                d = abs(a - b) / abs(b) if key in RELATIVE else abs(a - b)
                worst[key] = max(worst.get(key, 0.0), d)
                cells.append(f"{d:.2g}")
            print(f"| {name} | {what} | " + " | ".join(cells) + " |")
    print("\n| number | worst difference | tolerance (verify.SPREAD) | worst / tolerance |\n| --- | --- | --- | --- |")
    for key, d in worst.items():
        tol = SPREAD[key][0] if key in RELATIVE else SPREAD[key][1]
        print(f"| {key} | {d:.3g} | {tol:g} | {d / tol:.2f} |")


def report_optim(got: dict[str, dict[str, dict[str, float]]]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_speed import FUSED_ATOL

    print("\n| kernel path | optimiser | loss gap (relative) | weight gap (absolute) | weight gap / tolerance |\n"
          "| --- | --- | --- | --- | --- |")
    for name, rows in got.items():
        for what, nums in rows.items():
            tol = FUSED_ATOL[what.split()[-1]]
            print(f"| {name} | {what} | {nums['loss gap']:.2g} | {nums['weight gap']:.2g} | "
                  f"{nums['weight gap'] / tol:.2f} |")


def report_processes(got: dict[str, dict[str, dict[str, float]]]) -> None:
    from ssl_bench.analysis.conformance import PROCESS_TOLERANCE

    keys = list(PROCESS_TOLERANCE)
    print("\n| kernel path | run | " + " | ".join(keys) + " |\n|" + " --- |" * (len(keys) + 2))
    worst: dict[str, float] = dict.fromkeys(keys, 0.0)
    least: dict[str, float] = dict.fromkeys(keys, float("inf"))
    for name, rows in got.items():
        for what, nums in rows.items():
            print(f"| {name} | {what} | " + " | ".join(f"{nums.get(k, 0.0):.2g}" for k in keys) + " |")
            for k in keys:
                if what.endswith("with defect"):
                    least[k] = min(least[k], nums.get(k, 0.0)) if k == "loss" else least[k]
                else:
                    worst[k] = max(worst[k], nums.get(k, 0.0))
    print("\n| number | worst over methods and paths | tolerance (PROCESS_TOLERANCE) | worst / tolerance |"
          "\n| --- | --- | --- | --- |")
    for k in keys:
        print(f"| {k} | {worst[k]:.3g} | {PROCESS_TOLERANCE[k]:g} | {worst[k] / PROCESS_TOLERANCE[k]:.2f} |")
    print(f"\nsmallest loss gap of a planted defect: {least['loss']:.3g} "
          f"({least['loss'] / PROCESS_TOLERANCE['loss']:.0f} x the tolerance)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kinds = ("records", "optim", "processes")
    parser.add_argument("--only", choices=kinds, default=None)
    parser.add_argument("--child", choices=kinds, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--defect", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.defect:
        defect_worker(*args.defect)
        return
    if args.child:
        {"records": child_records, "optim": child_optim, "processes": child_processes}[args.child]()
        return
    from ssl_bench.common.kernels import kernel_path

    print(f"this machine: {kernel_path()}\n")
    if args.only in (None, "records"):
        report_records(run_paths("records"))
    if args.only in (None, "optim"):
        report_optim(run_paths("optim"))
    if args.only in (None, "processes"):
        report_processes(run_paths("processes"))


if __name__ == "__main__":
    main()
