"""A catalogue of deliberately broken configurations, trained to see whether and when a guardrail fires.

    .venv/bin/python -m benchmarks.guardrail_catalogue              # train what is missing, then regenerate
    .venv/bin/python -m benchmarks.guardrail_catalogue --no-train   # regenerate from the records only

Every case trains at one budget chosen to be affordable on a 2-core CPU (:data:`COMMON`: the demo budget cut to 3
epochs of 16 steps, 1024 images, kNN on 2000/1000 images; a minute or two a run) into ``--out``
(results/health/catalogue), one folder per case; a finished folder is reused, so running it again resumes. The
cases are split into a **tuning** part (looked at while the not_learning guardrail was written) and a **held-out**
part, fixed here before any held-out run was trained; **healthy** controls of the five objectives at the same budget
must stay quiet. Then it writes:

- ``results/health/catalogue.json``: per case the guardrails replayed on its record (today's code and thresholds,
  exactly what training fires: ``replay``), the epoch of the first, how the run ended and its kNN against its
  random-initialisation floor; the false-alarm replay over every shipped record (results/reference/runs);
- ``results/health/catalogue.md`` (included by docs/health.md): the held-out table, the detection rate on the
  held-out part, the false-alarm rates;
- ``ssl_bench/training/healthy_reference.json``: per budget, what healthy runs show for each guardrail's quantity
  (the ranges every guardrail message quotes), from the shipped records and the healthy controls on which no
  guardrail fires.

The replay of a shipped record trained before ``loss_sem`` existed gives each epoch's loss the seed spread of that
epoch's loss over the records of its configuration (the sample standard deviation over seeds: between-run noise,
larger than the within-run noise of an epoch mean, so a stricter test of false alarms than the run's own noise).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["dataset=fashion_mnist", "budget=demo", "train.epochs=3", "data.train_subset=1024", "eval.protocols=[knn]",
          "eval.knn_train_subset=2000", "eval.knn_test_subset=1000", "train.num_threads=1", "train.progress=false",
          "train.guardrails=warn", "seed=0"]
# The smoke controls: the smoke budget as it is, for the 3 epochs of the not_learning window.
SMOKE_COMMON = ["dataset=fashion_mnist", "budget=smoke", "train.epochs=3", "train.num_threads=1",
                "train.progress=false", "train.guardrails=warn", "seed=0"]
# SwAV's demo freezes its prototypes for 64 steps, one demo epoch; at 16 steps an epoch that is one epoch here too.
SWAV = ["method.freeze_prototypes_iters=16"]
# A learning rate far too small: the demo's cosine ends at final_lr = 1e-5, above such an lr, so the schedule's end
# is set 100x below it too (otherwise the "small" lr climbs to 1e-5 within the run).
TINY = lambda lr: [f"optim.lr={lr:g}", f"optim.final_lr={lr / 100:g}"]  # noqa: E731

# (name, part, method, overrides, what is broken). Fixed before the held-out runs were trained.
CASES: list[tuple[str, str, str, list[str], str]] = [
    ("swav-lr-1e-9", "tuning", "swav", [*SWAV, *TINY(1e-9)], "learning rate 1e6x too small"),
    ("carl-no-kl", "tuning", "carl", ["method.lambda_start=0", "method.lambda_end=0", "method.lambda_epochs=0"],
     "CARL's KL (equipartition) term off"),
    ("simclr-temperature-100", "tuning", "simclr", ["method.temperature=100"], "temperature 1000x too high"),
    ("deepclusterv2-lr-10", "tuning", "deepclusterv2", ["optim.lr=10"], "learning rate 10^4x too high"),
    ("selav2-warmup-100", "tuning", "selav2", ["optim.warmup_epochs=100"], "warm-up 100 epochs in a 3-epoch run"),
    ("simclr-lr-1e-8", "held-out", "simclr", TINY(1e-8), "learning rate 1e5x too small"),
    ("selav2-lr-1e-8", "held-out", "selav2", TINY(1e-8), "learning rate 1e5x too small"),
    ("deepclusterv2-lr-1e-9", "held-out", "deepclusterv2", TINY(1e-9), "learning rate 1e6x too small"),
    ("carl-warmup-50", "held-out", "carl", ["optim.warmup_epochs=50"], "warm-up 50 epochs in a 3-epoch run"),
    ("swav-prototypes-frozen", "held-out", "swav", ["method.freeze_prototypes_iters=1000000"],
     "prototypes frozen for the whole run"),
    ("swav-epsilon-10", "held-out", "swav", [*SWAV, "method.epsilon=10"], "Sinkhorn epsilon 200x too large"),
    ("selav2-epsilon-1e-3", "held-out", "selav2", ["method.epsilon=0.001"], "Sinkhorn epsilon 50x too small"),
    ("deepclusterv2-temperature-100", "held-out", "deepclusterv2", ["method.temperature=100"],
     "temperature 1000x too high"),
    ("simclr-temperature-1e-3", "held-out", "simclr", ["method.temperature=0.001"], "temperature 100x too low"),
    ("carl-lr-10", "held-out", "carl", ["optim.lr=10"], "learning rate 10^4x too high"),
    *[(f"{m}-healthy", "healthy", m, SWAV if m == "swav" else [], "the budget's defaults")
      for m in ("swav", "simclr", "deepclusterv2", "selav2", "carl")],
    # The smoke budget (4 steps an epoch) run for the 3 epochs of the window: its healthy reference, and quiet there.
    *[(f"{m}-smoke-healthy", "healthy", m, [], "the smoke budget's defaults, 3 epochs")
      for m in ("swav", "simclr", "deepclusterv2", "selav2", "carl")],
]


def train(out: Path) -> None:
    """Each case not yet finished in ``out`` (a summary.json, or outcome.json for a run that stopped)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    for i, (name, part, method, overrides, _) in enumerate(CASES, 1):
        run = out / name
        if (run / "summary.json").exists() or (run / "outcome.json").exists():
            print(f"[{i}/{len(CASES)}] {name} ({part}): finished, reused", flush=True)
            continue
        print(f"[{i}/{len(CASES)}] {name} ({part}): training ...", flush=True)
        t = time.time()
        common = SMOKE_COMMON if "smoke" in name else COMMON
        cmd = [sys.executable, "-m", "ssl_bench.run", f"method={method}", *common, *overrides,
               f"output_dir={out}", f"run_id={name}", "resume=true"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        tail = (proc.stdout + proc.stderr).replace(f"{ROOT}/", "").strip().splitlines()[-3:]
        if proc.returncode != 0:
            run.mkdir(parents=True, exist_ok=True)
            (run / "outcome.json").write_text(json.dumps({"returncode": proc.returncode, "tail": tail}, indent=1))
        print(f"    rc {proc.returncode} in {time.time() - t:.0f} s: {tail[-1] if tail else ''}", flush=True)


def replay(run: Path, loss_noise: dict[int, float] | None = None) -> list[dict]:
    """The guardrails today's code fires on a record's rows, epoch by epoch ([{"epoch", "check", "message"}]), with
    the default thresholds; ``loss_noise`` (epoch -> noise) stands in for a missing loss_sem."""
    from omegaconf import OmegaConf

    from ssl_bench.config.schema import HealthConfig
    from ssl_bench.records.io import read_metrics
    from ssl_bench.training.health import check_guardrails

    cfg = OmegaConf.merge(OmegaConf.load(run / "config.yaml"), {"health": OmegaConf.structured(HealthConfig)})
    rows: list[dict] = []
    fired = []
    moved = 0.0
    for row in read_metrics(run):
        row = {k: v for k, v in row.items() if k != "guardrails"}
        if "weight_change" in row and "weight_drift" not in row:
            # The catalogue's first records kept the per-epoch change; their sum bounds the drift from the initial
            # weights (triangle inequality, up to the change of the norm). It orders the causes, it decides nothing.
            moved += float(row["weight_change"])
            row["weight_drift"] = moved
        if "loss_sem" not in row and loss_noise and row["epoch"] in loss_noise:
            row["loss_sem"] = loss_noise[row["epoch"]]
        rows.append(row)
        rows[-1]["guardrails"] = check_guardrails(rows, cfg)
        fired += [{"epoch": row["epoch"], **g} for g in rows[-1]["guardrails"]]
    return fired


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def seed_spread(runs: list[Path]) -> dict[Path, dict[int, float]]:
    """Per record without loss_sem: epoch -> the sample sd of that epoch's loss over its configuration's seeds."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in runs:
        groups[run.name.rsplit("-s", 1)[0] + run.name.rsplit("-", 1)[1]].append(run)
    out: dict[Path, dict[int, float]] = {}
    for members in groups.values():
        losses = defaultdict(list)
        for run in members:
            for r in _rows(run):
                losses[r["epoch"]].append(float(r["loss"]))
        spread = {e: statistics.stdev(v) for e, v in losses.items() if len(v) > 1}
        out.update({run: spread for run in members})
    return out


def ended(tail: list[str]) -> str:
    """How a stopped run ended: its last `stopped:` or `error:` line (else its last line), with the folder it was
    trained in cut to the path inside the repository (the catalogue reads the same wherever it was made)."""
    lines = [line for line in tail if line.startswith(("stopped:", "error:"))] or tail[-1:] or ["stopped"]
    return re.sub(r"\S*/(results/health/catalogue/)", r"\1", lines[-1])


def case_result(out: Path, case: tuple) -> dict[str, Any]:
    """One case's outcome: the guardrails replayed on its record (epochs 1-based), how it ended, kNN and floor."""
    from ssl_bench.records.io import below_floor

    name, part, method, overrides, what = case
    run = out / name
    res: dict[str, Any] = {"name": name, "part": part, "method": method, "overrides": overrides, "what": what,
                           "ended": "not trained", "fired": []}
    stopped = False
    if (run / "outcome.json").exists():
        outcome = json.loads((run / "outcome.json").read_text())
        res["ended"] = ended(outcome["tail"])
        stopped = any("loss became" in line for line in outcome["tail"])
    fired = replay(run) if (run / "metrics.jsonl").exists() else []
    res["fired"] = [{"epoch": f["epoch"] + 1, "check": f["check"], "message": f["message"]} for f in fired]
    if stopped:  # a non-finite loss stops the run inside the epoch after the last row
        epochs = len(_rows(run)) if (run / "metrics.jsonl").exists() else 0
        res["fired"].append({"epoch": epochs + 1, "check": "non_finite", "message": res["ended"]})
    if (run / "summary.json").exists():
        m = json.loads((run / "summary.json").read_text())["metrics"]
        res.update(ended="finished", knn_top1=m.get("knn_top1"), random_knn_top1=m.get("random_knn_top1"),
                   below_floor=below_floor(m))
    return res


def reference(records: list[Path], budget_of: dict[Path, str], window: int) -> dict[str, dict]:
    """Per budget, the range over ``records`` (healthy) of each guardrail's quantity (the keys the messages quote)."""
    from omegaconf import OmegaConf

    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in records:
        rows = _rows(run)
        v = values[budget_of[run]]
        if len(rows) >= window:
            v[f"loss_fall_{window}"].append((rows[0]["loss"] - rows[window - 1]["loss"]) / abs(rows[0]["loss"]))
        k = OmegaConf.select(OmegaConf.load(run / "config.yaml"), "method.num_prototypes", default=None)
        if isinstance(k, int) and k > 1:
            v["loss_from_ln_k"].append(min(abs(r["loss"] - math.log(k)) / math.log(k) for r in rows))
            if all("prototypes_used" in r for r in rows):
                v["prototypes_used_fraction"].append(min(r["prototypes_used"] for r in rows) / k)
        for key, name in (("health_rank_projection", "rank_projection"), ("health_rank_backbone", "rank_backbone")):
            if all(key in r for r in rows):
                v[name].append(min(r[key] for r in rows))
    return {b: {k: {"min": round(min(x), 4), "max": round(max(x), 4), "n": len(x)} for k, x in sorted(v.items())}
            for b, v in sorted(values.items())}


def _budget(run: Path) -> str:
    return str(json.loads((run / "summary.json").read_text()).get("budget") if (run / "summary.json").exists()
               else "?")


def _first(fired: list[dict], checks: set[str] | None = None) -> dict | None:
    return next((f for f in fired if checks is None or f["check"] in checks), None)


def regenerate(out: Path, shipped: Path = ROOT / "results/reference/runs") -> dict[str, Any]:
    """The healthy reference, then every case and every shipped record replayed against it; writes the JSON, the
    Markdown fragment and ssl_bench/training/healthy_reference.json."""
    from ssl_bench.config.schema import HealthConfig
    from ssl_bench.records.io import write_atomic

    window = HealthConfig().flat_epochs
    records = sorted(p for p in shipped.iterdir() if (p / "metrics.jsonl").exists() and (p / "config.yaml").exists())
    spread = seed_spread(records)
    controls = [out / c[0] for c in CASES if c[1] == "healthy" and (out / c[0] / "summary.json").exists()]
    # Healthy: no guardrail but not_learning fires (the reference must not depend on the check it calibrates).
    healthy = [r for r in records + controls
               if not any(f["check"] != "not_learning" for f in replay(r, spread.get(r)))]
    ref_path = ROOT / "ssl_bench/training/healthy_reference.json"
    write_atomic(ref_path, json.dumps({"_about": "written by python -m benchmarks.guardrail_catalogue: per budget, "
                                                 "the range of each guardrail's quantity over healthy records",
                                       **reference(healthy, {r: _budget(r) for r in healthy}, window)},
                                      indent=1, sort_keys=True) + "\n")
    cases = [case_result(out, c) for c in CASES]
    shipped_fired = {r.name: replay(r, spread.get(r)) for r in records}
    quiet = [n for n, f in shipped_fired.items() if not _first(f, {"not_learning"})]
    others = sorted(n for n, f in shipped_fired.items() if _first(f, None) and not _first(f, {"not_learning"}))
    other_checks = sorted({f["check"] for n in others for f in shipped_fired[n]})
    held = [c for c in cases if c["part"] == "held-out" and c["ended"] != "not trained"]
    data = {"budget": COMMON, "smoke_controls": SMOKE_COMMON, "window": window, "cases": cases,
            "held_out_detected": sum(bool(c["fired"]) for c in held), "held_out_n": len(held),
            "held_out_not_learning": sum(any(f["check"] == "not_learning" for f in c["fired"]) for c in held),
            "shipped_n": len(records), "shipped_not_learning": len(records) - len(quiet),
            "shipped_other_guardrails": others, "shipped_other_checks": other_checks,
            "controls_fired": [c["name"] for c in cases if c["part"] == "healthy"
                               and any(f["check"] == "not_learning" for f in c["fired"])],
            "controls_other": [f"{c['name']} ({c['fired'][0]['check']})" for c in cases if c["part"] == "healthy"
                               and c["fired"] and not any(f["check"] == "not_learning" for f in c["fired"])],
            "controls_n": sum(c["part"] == "healthy" and c["ended"] != "not trained" for c in cases)}
    write_atomic(ROOT / "results/health/catalogue.json", json.dumps(data, indent=1) + "\n")
    write_atomic(ROOT / "results/health/catalogue.md", markdown(data))
    return data


def _fired_text(c: dict) -> str:
    return ", ".join(f"`{f['check']}` (epoch {f['epoch']})" for f in c["fired"]) or "none"


def markdown(d: dict[str, Any]) -> str:
    """The generated fragment docs/health.md includes."""
    def table(part: str) -> str:
        lines = ["| case | what is broken | overrides | guardrail (first epoch, 1-based) | fired | kNN vs its "
                 "random init (%) |", "| --- | --- | --- | --- | --- | --- |"]
        for c in (x for x in d["cases"] if x["part"] == part):
            knn = (f"{c['knn_top1']:.2f} vs {c['random_knn_top1']:.2f}" + (" **below**" if c["below_floor"] else "")
                   if c.get("knn_top1") is not None and c.get("random_knn_top1") is not None else
                   "stopped (non-finite loss)" if any(f["check"] == "non_finite" for f in c["fired"]) else c["ended"])
            fired = ("yes" if c["fired"] else "**no**") if part != "healthy" else ("**yes**" if c["fired"] else "no")
            lines.append(f"| {c['name']} | {c['what']} | `{' '.join(c['overrides']) or '—'}` | {_fired_text(c)} | "
                         f"{fired} | {knn} |")
        return "\n".join(lines)
    n, det = d["held_out_n"], d["held_out_detected"]
    healthy = d["shipped_n"] - len(d["shipped_other_guardrails"])
    return (f"Generated by `python -m benchmarks.guardrail_catalogue` (results/health/catalogue.json); do not edit.\n\n"
            f"**Budget**: `{' '.join(d['budget'])}` (the demo budget cut to {d['window']} epochs of 16 steps: about "
            f"a minute or two a run on 2 CPU cores); the smoke controls: `{' '.join(d['smoke_controls'])}`. Each "
            f"case's guardrails are replayed on its record by today's code (what training fires, epoch by epoch).\n\n"
            f"**Held-out detection**: {det} of {n} held-out failures fired a guardrail ({det / max(n, 1):.0%}); "
            f"`not_learning` fired in {d['held_out_not_learning']} of them.\n\n"
            f"**False alarms**: `not_learning` fired on {d['shipped_not_learning']} of the {d['shipped_n']} shipped "
            f"records (results/reference/runs, replayed; a record without `loss_sem` gets its configuration's seed "
            f"spread of the loss as noise) and on {len(d['controls_fired'])} of the {d['controls_n']} healthy "
            f"controls ({', '.join(d['controls_fired']) or 'none'}; an older check fires on "
            f"{', '.join(d['controls_other']) or 'none'}). Over all guardrails, "
            f"{d['shipped_n'] - healthy} shipped records fire an older check ("
            f"{', '.join(f'`{c}`' for c in d['shipped_other_checks']) or 'none'}: configurations that fail it, as "
            f"before this check existed); `not_learning` fired on {d['shipped_not_learning']} of the other "
            f"{healthy}.\n\n"
            f"### Held-out part (fixed in benchmarks/guardrail_catalogue.py before it was trained)\n\n"
            + table("held-out") + "\n\n### Tuning part\n\n" + table("tuning")
            + "\n\n### Healthy controls (must stay quiet)\n\n" + table("healthy") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results/health/catalogue")
    parser.add_argument("--no-train", action="store_true", help="only regenerate from the records in --out")
    args = parser.parse_args()
    if not args.no_train:
        train(args.out)
    d = regenerate(args.out)
    print(f"held-out: {d['held_out_detected']} of {d['held_out_n']} detected; not_learning on "
          f"{d['shipped_not_learning']} of {d['shipped_n']} shipped records and {len(d['controls_fired'])} of "
          f"{d['controls_n']} healthy controls; wrote results/health/catalogue.md, results/health/catalogue.json, "
          f"ssl_bench/training/healthy_reference.json")


if __name__ == "__main__":
    main()
