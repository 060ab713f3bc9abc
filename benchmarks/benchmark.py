"""Two micro-benchmarks, run on one machine in one process, printed as one table.

1. Loop overhead: ms per training step of our shared loop (``Trainer.train_step``: Accelerate's
   accumulate/backward, the method's hooks, the lr schedule) against a bare PyTorch loop doing the same
   forward/backward/optimiser step and SwAV's prototype renormalisation, on the same architecture, the
   same initial weights, the same optimiser settings and the same pre-built synthetic multi-crop batch
   (no data loading). The two loops' steps are interleaved (ABBA order) so that machine noise hits both.
   Both run at one constant lr, so they follow the same trajectory: equal losses show equal work. The
   loop's fixed cost per step is also measured on a 4-parameter model, where nothing else costs anything.
   The ratio is measured with each speed option off and on (``--options``): both loops then get the option
   (channels-last model and crops, fused optimiser, compiled backbone and head), so the ratio stays the
   cost of our loop, not of the option.
2. Sinkhorn-Knopp: ``ssl_bench.ops.sinkhorn.sinkhorn`` against lightly's ``sinkhorn`` on a 4096 x 3000
   float32 matrix of cosine scores (epsilon 0.05, 3 iterations): median time, speed-up, largest code
   difference; and what each returns once scores / epsilon exceeds float32's exp range (~88).

    .venv/bin/python -m benchmarks.benchmark    # ~1 min on 2 idle CPU cores, ~2.5 min when they are shared
    .venv/bin/python -m benchmarks.benchmark --steps 10 --sinkhorn-repeats 7    # quicker, noisier
    .venv/bin/python benchmarks/benchmark.py --skip-loop    # Sinkhorn only
    .venv/bin/python -m benchmarks.benchmark --threads 1    # steadier when other processes share the cores
    .venv/bin/python -m benchmarks.benchmark --options off,fused --skip-sinkhorn    # some options only
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn  # noqa: E402

from ssl_bench.config.compose import compose  # noqa: E402
from ssl_bench.methods.base import Method  # noqa: E402
from ssl_bench.models.networks import apply_speed_options  # noqa: E402
from ssl_bench.ops.sinkhorn import random_cosine_scores, sinkhorn, sinkhorn_log_reference  # noqa: E402
from ssl_bench.pipeline.experiment import build_model, make_accelerator  # noqa: E402
from ssl_bench.training.loop import Trainer  # noqa: E402
from ssl_bench.training.optim import build_optimizer  # noqa: E402

LOOP_GOAL = 1.03  # ours / bare, per step
# The speed options the loop ratio is measured with (each alone; "off" is none of them).
OPTIONS = {"off": [], "channels_last": ["train.channels_last=true"], "fused": ["optim.fused=true"],
           "compile": ["train.compile=true"]}


# -- helpers ------------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


class _Indices(torch.utils.data.Dataset):
    """A stand-in training set of the right length: the Trainer only builds (never iterates) its loader."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def synthetic_batch(cfg, seed: int = 0) -> dict:
    """Random crops of the config's multi-crop shapes (global crops first), as the loader would give."""
    g = torch.Generator().manual_seed(seed)
    b = cfg.data.batch_size
    crops = [torch.randn(b, 3, spec.size, spec.size, generator=g)
             for spec in (cfg.crops["global"], cfg.crops["local"]) for _ in range(spec.n)]
    return {"crops": crops, "index": torch.arange(b), "label": torch.zeros(b, dtype=torch.long)}


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved A B B A ... so drifting noise hits all."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


# -- 1. loop overhead ---------------------------------------------------------------------------------
class _TinyModel(torch.nn.Module):
    """Four parameters and a no-op method: a step costs next to nothing, so what remains is the loop."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))
        self.method = Method(cfg, 4)  # the base class: every hook is a no-op

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        loss = (self.w * self.w).sum()
        return loss, {"loss": loss.item()}


def bench_loop(overrides: list[str], steps: int, warmup: int, tiny: bool = False) -> dict:
    # Prototypes are normally frozen for the first steps (their gradient dropped before the optimiser
    # step): set that to 0 so both loops update the same parameters on every step. A flat schedule (no
    # warm-up, final lr = lr) gives the Trainer the bare loop's constant lr (it still computes and sets
    # it every step), so both follow the same trajectory: their losses must stay equal.
    lr = compose(["budget=demo", *overrides]).optim.lr
    cfg = compose(["budget=demo", "method.freeze_prototypes_iters=0", "optim.warmup_epochs=0",
                   f"optim.final_lr={lr}", *overrides])
    torch.manual_seed(cfg.seed)
    model = _TinyModel(cfg) if tiny else build_model(cfg)
    bare_model = copy.deepcopy(model)  # same architecture, same initial weights
    apply_speed_options(bare_model, cfg)  # the Trainer does the same to `model`

    losses: dict[str, list[float]] = {"ours": [], "bare": []}

    def bare_step() -> None:
        loss, _ = bare_model(batch)
        losses["bare"].append(loss.item())
        loss.backward()
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)
        bare_method.after_step(None)  # SwAV: renormalise the prototypes (the hook ignores its context)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        acc = make_accelerator(cfg, run_dir)
        device = acc.device
        # On a GPU both loops get the batch there, as the loader would hand it over (pinned, prefetched).
        batch = {k: [c.to(acc.device) for c in v] if isinstance(v, list) else v.to(acc.device)
                 for k, v in synthetic_batch(cfg).items()}
        bare_model.to(acc.device)
        bare_opt = build_optimizer(bare_model, cfg)  # same optimiser class, groups and settings
        bare_method = bare_model.method
        try:
            trainer = Trainer(cfg, acc, model, _Indices(cfg.data.train_subset or 4096), {}, run_dir, 0)
            model.train()
            bare_model.train()

            def ours_step() -> None:
                losses["ours"].append(trainer.train_step(batch)[0].item())

            interleaved({"ours": ours_step, "bare": bare_step}, warmup)
            times = interleaved({"ours": ours_step, "bare": bare_step}, steps)
        finally:
            acc.end_training()
            AcceleratorState._reset_state()
            GradientState._reset_state()
    ours, bare = median_ms(times["ours"]), median_ms(times["bare"])
    paired = statistics.median(a / b for a, b in zip(times["ours"], times["bare"], strict=True))
    return {"cfg": cfg, "device": str(device), "ours_ms": ours, "bare_ms": bare, "ratio": ours / bare,
            "paired_ratio": paired,
            "ours_min": min(times["ours"]) * 1e3, "bare_min": min(times["bare"]) * 1e3,
            "steps": steps, "last_loss": {k: v[-1] for k, v in losses.items()},
            "max_loss_diff": max(abs(a - b) for a, b in zip(losses["ours"], losses["bare"], strict=True))}


# -- 2. Sinkhorn --------------------------------------------------------------------------------------
def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """fn, then wait for the device: a timed call on a GPU must include its kernels, not only their launch."""
    if device.type != "cuda":
        return fn

    def call() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


def bench_sinkhorn(b: int, k: int, eps: float, iters: int, repeats: int, device: str | torch.device = "cpu") -> dict:
    dev = torch.device(device)
    s = random_cosine_scores(b, k).to(dev)
    fns = {"ours": lambda: sinkhorn(s, eps, iters), "lightly": lambda: lightly_sinkhorn(s, iters, eps),
           # The floor under both: allocating a B x K float32 tensor and writing it once (page faults on
           # first touch). Ours allocates one such tensor (its result); lightly's allocates two.
           "fresh": lambda: torch.empty(b, k, device=dev).fill_(1.0)}
    fns = {name: synced(fn, dev) for name, fn in fns.items()}
    interleaved(fns, 2)  # warm-up
    times = interleaved(fns, repeats)
    ours_q, lightly_q = sinkhorn(s, eps, iters), lightly_sinkhorn(s, iters, eps)
    out = {"b": b, "k": k, "eps": eps, "iters": iters, "repeats": repeats, "device": str(dev),
           "ours_ms": median_ms(times["ours"]), "lightly_ms": median_ms(times["lightly"]),
           "ours_min": min(times["ours"]) * 1e3, "lightly_min": min(times["lightly"]) * 1e3,
           "fresh_ms": median_ms(times["fresh"]),
           "max_diff": (ours_q - lightly_q).abs().max().item(),
           "row_err": (ours_q.sum(1) - 1).abs().max().item()}
    out["speedup"] = out["lightly_ms"] / out["ours_ms"]
    # Scores x 10: |scores / eps| reaches ~90 here, past float32's exp range (exp(88.7) = inf).
    big = s * 10
    ours_big, lightly_big = sinkhorn(big, eps, iters), lightly_sinkhorn(big, iters, eps)
    out["big_ratio_max"] = (big / eps).abs().max().item()
    out["lightly_big_nonfinite"] = int((~torch.isfinite(lightly_big)).sum())
    out["ours_big_nonfinite"] = int((~torch.isfinite(ours_big)).sum())
    out["ours_big_err"] = (ours_big - sinkhorn_log_reference(big, eps, iters).float()).abs().max().item()
    out["numel"] = big.numel()
    return out


def loop_option_rows(args: argparse.Namespace, options: list[str]) -> list[tuple[str, str, str, str]]:
    """The loop ratio with each speed option on (both loops get it), one table row each."""
    rows: list[tuple[str, str, str, str]] = []
    base = compose(["budget=demo", *args.overrides])
    for name in options:
        if name == "fused" and base.optim.name not in ("sgd", "adamw"):
            rows.append((f"step ratio, {name} on", "n/a", f"{base.optim.name} has no fused version", ""))
            continue
        torch._dynamo.reset()  # each compiled run starts from an empty cache of graphs
        t0 = time.time()
        # Compiling happens in the warm-up steps (one graph per crop size and per loop).
        r = bench_loop([*args.overrides, *OPTIONS[name]], args.steps, args.warmup + (3 if name == "compile" else 0))
        verdict = "ok" if r["paired_ratio"] <= LOOP_GOAL else f"ABOVE the {LOOP_GOAL} goal"
        print(f"[1] {name} on: ours {r['ours_ms']:.2f} ms, bare {r['bare_ms']:.2f} ms per step, largest loss "
              f"difference {r['max_loss_diff']:.1e} ({time.time() - t0:.0f} s with warm-up)")
        rows.append((f"step ratio ours / bare, {name} on", f"paired median {r['paired_ratio']:.3f}",
                     f"ratio of medians {r['ratio']:.3f}", f"goal <= {LOOP_GOAL}: {verdict}"))
        rows.append((f"  {name} on: ours / bare step", f"{r['ours_ms']:.2f} ms / {r['bare_ms']:.2f} ms", "", ""))
    return rows


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per loop (interleaved)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per loop first")
    p.add_argument("--tiny-steps", type=int, default=2000, help="timed steps of the 4-parameter model")
    p.add_argument("--sinkhorn-repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--skip-loop", action="store_true")
    p.add_argument("--skip-sinkhorn", action="store_true")
    p.add_argument("--options", default=",".join(OPTIONS),
                   help=f"speed options to measure the loop ratio with, each alone: {', '.join(OPTIONS)}")
    p.add_argument("overrides", nargs="*", help="extra config overrides for the loop benchmark")
    args = p.parse_args(argv)
    options = [o.strip() for o in args.options.split(",") if o.strip()]
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        p.error(f"unknown --options {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    import accelerate
    import lightly

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_name()}, {cores} cores usable; torch {torch.__version__} with "
          f"{torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads; "
          f"accelerate {accelerate.__version__}, lightly {lightly.__version__}, "
          f"python {platform.python_version()}")
    print(f"load average at start: {load()}")
    rows: list[tuple[str, str, str, str]] = []
    t_start = time.time()

    if not args.skip_loop and "off" in options:
        r = bench_loop(args.overrides, args.steps, args.warmup)
        cfg = r["cfg"]
        shapes = " + ".join(f"{s.n}x{s.size}px" for s in (cfg.crops["global"], cfg.crops["local"]) if s.n)
        print(f"\n[1] training step, budget={cfg.choices.budget}: {cfg.backbone.name} (width {cfg.backbone.width}), "
              f"{cfg.method.name} with {cfg.method.num_prototypes} prototypes, optimiser {cfg.optim.name}, "
              f"batch {cfg.data.batch_size} of {shapes} synthetic crops; {r['steps']} interleaved steps each "
              f"after {args.warmup} warm-up; same lr {cfg.optim.lr} every step; last losses: ours "
              f"{r['last_loss']['ours']:.5f}, bare {r['last_loss']['bare']:.5f} (largest step-by-step "
              f"difference {r['max_loss_diff']:.1e})")
        # The loop's own cost per step, measured where nothing else costs anything (a 4-parameter model):
        # robust to machine noise, unlike the difference of two ~0.5 s medians.
        tiny = bench_loop(args.overrides, args.tiny_steps, 50, tiny=True)
        fixed_ms = tiny["ours_ms"] - tiny["bare_ms"]
        # Verdict on the paired median (each ours/bare pair ran back to back, so slow drifts in the
        # machine's load cancel); the ratio of the two medians is printed too.
        verdict = "ok" if r["paired_ratio"] <= LOOP_GOAL else f"ABOVE the {LOOP_GOAL} goal"
        rows += [
            ("step: ours (Trainer.train_step)", f"{r['ours_ms']:.2f} ms", f"min {r['ours_min']:.2f} ms", ""),
            ("step: bare PyTorch loop", f"{r['bare_ms']:.2f} ms", f"min {r['bare_min']:.2f} ms", ""),
            ("step ratio ours / bare", f"paired median {r['paired_ratio']:.3f}",
             f"ratio of medians {r['ratio']:.3f}", f"goal <= {LOOP_GOAL}: {verdict}"),
            ("step overhead ours - bare", f"{r['ours_ms'] - r['bare_ms']:+.2f} ms", "", ""),
            (f"images/s per device ({r['device']}, ours)", f"{cfg.data.batch_size / r['ours_ms'] * 1e3:.0f}",
             f"batch {cfg.data.batch_size}, {shapes}", f"precision {cfg.train.precision}"),
            ("loop cost, 4-parameter model", f"ours {tiny['ours_ms'] * 1e3:.0f} us",
             f"bare {tiny['bare_ms'] * 1e3:.0f} us", f"{args.tiny_steps} steps each"),
            ("  = fixed overhead per step", f"{fixed_ms * 1e3:+.0f} us",
             f"{fixed_ms / r['bare_ms'] * 100:+.3f}% of a demo step",
             f"implied ratio {1 + fixed_ms / r['bare_ms']:.4f}"),
        ]
    if not args.skip_loop:
        rows += loop_option_rows(args, [o for o in options if o != "off"])

    if not args.skip_sinkhorn:
        s = bench_sinkhorn(4096, 3000, 0.05, 3, args.sinkhorn_repeats)
        print(f"\n[2] Sinkhorn-Knopp on {s['b']} x {s['k']} float32 cosine scores, epsilon {s['eps']}, "
              f"{s['iters']} iterations, {s['repeats']} interleaved repeats each")
        rows += [
            ("sinkhorn: ours", f"{s['ours_ms']:.2f} ms", f"min {s['ours_min']:.2f} ms", ""),
            ("sinkhorn: lightly", f"{s['lightly_ms']:.2f} ms", f"min {s['lightly_min']:.2f} ms", ""),
            ("sinkhorn speed-up lightly / ours", f"{s['speedup']:.2f}x",
             f"min-based {s['lightly_min'] / s['ours_min']:.2f}x", ""),
            (f"  (fresh {s['b']} x {s['k']} float32 tensor, 1st write)", f"{s['fresh_ms']:.2f} ms",
             "ours allocates 1, lightly 2", ""),
            ("sinkhorn max |ours - lightly|", f"{s['max_diff']:.2e}",
             f"rows sum to 1 within {s['row_err']:.1e}", "ok" if s["max_diff"] <= 1e-5 else "DIFFERENT"),
            (f"scores x10 (|s/eps| up to {s['big_ratio_max']:.0f})",
             f"lightly: {s['lightly_big_nonfinite']}/{s['numel']} non-finite",
             f"ours: {s['ours_big_nonfinite']} non-finite",
             f"ours vs float64 log-domain: {s['ours_big_err']:.1e}"),
        ]

    w = [max(len(row[i]) for row in rows) for i in range(4)] if rows else [0] * 4
    print()
    for row in rows:
        print("  ".join(cell.ljust(w[i]) for i, cell in enumerate(row)).rstrip())
    print(f"\nload average at end: {load()}; benchmark took {time.time() - t_start:.0f} s")
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > (cores or 1):
        print("note: other processes were competing for the cores, so single timings are noisy: the paired "
              "median ratio and the fixed overhead per step are the robust loop figures. With several torch "
              "threads on a shared machine every op waits for its slowest thread; --threads 1 is steadier.")


if __name__ == "__main__":
    main()
