"""How far the suite's exact numbers move on another CPU kernel path (ssl_bench.common.kernels): the measurement behind
the
tolerances of ssl_bench.analysis.verify.SPREAD and tests/test_speed.py's fused-optimiser check.

    .venv/bin/python -m benchmarks.kernel_spread                 # the verify sample (5 records) and the optimisers
    .venv/bin/python -m benchmarks.kernel_spread --only optim    # the fused optimisers only (seconds)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("records", "optim"), default=None)
    parser.add_argument("--child", choices=("records", "optim"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (child_records if args.child == "records" else child_optim)()
        return
    from ssl_bench.common.kernels import kernel_path

    print(f"this machine: {kernel_path()}\n")
    if args.only in (None, "records"):
        report_records(run_paths("records"))
    if args.only in (None, "optim"):
        report_optim(run_paths("optim"))


if __name__ == "__main__":
    main()
