"""What the per-epoch health (effective rank, alignment, uniformity, std) and the online linear probe cost: the same
run with them off and on, alternated in one process (off, on, off, on, ...), so both see the same machine and load.

    .venv/bin/python -m benchmarks.health_overhead                                  # smoke budget, seconds
    .venv/bin/python -m benchmarks.health_overhead budget=demo train.epochs=2       # the issue's budget, minutes

Printed: per repeat the training loop's wall time (metrics.jsonl's last wall_s: steps, monitor, health,
checkpoints) off and on, the time spent in the health measurement and probe themselves (and in making the fixed
views, once per run), and the ratios on / off. Extra arguments are overrides for both runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

OFF = ["health.samples=0", "health.linear_probe=false", "train.guardrails=off"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs (off, on)")
    parser.add_argument("overrides", nargs="*", default=[])
    args = parser.parse_args()
    overrides = args.overrides or ["budget=smoke"]
    if not any(o.startswith("budget=") for o in overrides):
        overrides = ["budget=smoke", *overrides]

    from ssl_bench.config.compose import compose
    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.records.io import read_metrics
    from ssl_bench.training import health, hooks

    spent = {"measure": 0.0, "views": 0.0}
    measure, init = hooks.Health.measure, health.HealthSample.__init__

    def timed_measure(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        t = time.perf_counter()
        try:
            return measure(self, *a, **k)
        finally:
            spent["measure"] += time.perf_counter() - t

    def timed_init(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        t = time.perf_counter()
        try:
            return init(self, *a, **k)
        finally:
            spent["views"] += time.perf_counter() - t

    hooks.Health.measure = timed_measure  # type: ignore[method-assign]
    health.HealthSample.__init__ = timed_init  # type: ignore[method-assign]
    common = ["eval.random_baseline=false", "eval.protocols=[knn]", "overwrite=true", "train.progress=false"]
    walls: dict[str, list[float]] = {"off": [], "on": []}
    parts: dict[str, list[float]] = {"measure": [], "views": []}
    with tempfile.TemporaryDirectory(prefix="health_overhead_") as tmp:
        for r in range(args.repeats):
            for mode in ("off", "on"):
                spent.update(measure=0.0, views=0.0)
                cfg = compose([*overrides, *common, f"output_dir={Path(tmp) / mode}",
                               *(OFF if mode == "off" else [])])
                run_experiment(cfg)
                run = next((Path(tmp) / mode).iterdir())
                walls[mode].append(float(read_metrics(run)[-1]["wall_s"]))
                if mode == "on":
                    parts["measure"].append(spent["measure"])
                    parts["views"].append(spent["views"])
                print(f"repeat {r + 1} {mode}: training loop {walls[mode][-1]:.2f} s"
                      + (f" (health + probe {spent['measure']:.2f} s, views {spent['views']:.2f} s)"
                         if mode == "on" else ""), flush=True)
    off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
    m, v = statistics.median(parts["measure"]), statistics.median(parts["views"])
    print(f"\n{' '.join(overrides)}: training loop off {off:.2f} s, on {on:.2f} s: ratio on/off {on / off:.3f}; "
          f"health + probe {m:.2f} s = {m / off:.1%} of the loop without it; views made once {v:.2f} s "
          f"({v / off:.1%}) (medians of {args.repeats})")


if __name__ == "__main__":
    main()
