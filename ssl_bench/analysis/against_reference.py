"""Your run beside the shipped reference records of the same configuration: the end of ``ssl_bench.run`` (and of
each run of a comparison) prints your numbers, the reference's same seed and its mean over seeds with a 95%
interval, and why the same seed can give another number (threads, device, precision, torch, CPU kernels, code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ssl_bench.analysis.report import fmt_stat, t_interval
from ssl_bench.config.schema import KNN_K
from ssl_bench.records import io as records_io
from ssl_bench.records.identity import configuration_id
from ssl_bench.records.io import _normalise, dig, read_config, read_json, read_summary, readable
from ssl_bench.records.layout import ResultsLayout


def reference_lines(cfg: DictConfig, summary: dict[str, Any], run_dir: Path,
                    reference: Path | None = None) -> list[str]:
    """Yours next to the shipped reference records of the same configuration (any seed): the same seed's
    number and the mean over the reference seeds, with the differences. Empty when there is none."""
    ref_runs = ResultsLayout(reference or records_io.REFERENCE_DIR).runs
    if not ref_runs.is_dir() or Path(run_dir).resolve().is_relative_to(ref_runs.resolve()):
        return []
    cid = configuration_id(cfg)
    found = [d for d in sorted(ref_runs.glob(f"*-s*-{cid}")) if (d / "summary.json").exists() and readable(d)]
    if not found:
        return []
    refs = {int(read_json(d / "summary.json")["seed"]): read_summary(d)["metrics"] for d in found}
    mine = _normalise(summary)["metrics"]
    lines = [f"shipped reference: {ref_runs} has this configuration with seeds {' '.join(map(str, sorted(refs)))}"]
    for name, key in ((f"kNN top-1 (k={KNN_K})", "knn_top1"), ("linear probe top-1", "linear.top1")):
        yours = dig(mine, key)
        values = {s: dig(m, key) for s, m in refs.items() if dig(m, key) is not None}
        if yours is None or not values:
            continue
        stat = t_interval(values.values())
        same = values.get(int(summary.get("seed", cfg.seed)))
        text = f"  {name}: yours {yours:.2f}"
        if same is not None:
            text += f" | reference, same seed {same:.2f} (difference {yours - same:+.2f})"
        text += f" | reference {fmt_stat(stat, 2)} (difference {yours - stat.mean:+.2f})"
        lines.append(text)
    seed = int(summary.get("seed", cfg.seed))
    same_seed = [d for d in found if int(read_json(d / "summary.json")["seed"]) == seed]
    if same_seed and len(lines) > 1:
        lines.append("  " + same_seed_note(cfg, summary, same_seed[0]))
    return lines


def same_seed_note(cfg: DictConfig, summary: dict[str, Any], ref_dir: Path) -> str:
    """Why your run and the reference record of the same seed can differ (threads, device, precision, library
    versions, code), or that they should be equal, so that a gap can be read."""
    ref, ref_cfg = read_summary(ref_dir), read_config(ref_dir)
    mine_v, ref_v = summary.get("versions") or {}, ref.get("versions") or {}
    ledger = ResultsLayout.of_run(ref_dir).ledger
    checked = (read_json(ledger).get("records", {}).get(ref_dir.name, {}) if ledger.exists() else {})
    reasons = []
    t_mine, t_ref = cfg.train.num_threads, (ref_cfg.get("train") or {}).get("num_threads")
    if t_mine != t_ref:
        reasons.append(f"threads (yours {t_mine}, the reference's {t_ref}: sums are added in another order)")
    cost, ref_cost = summary.get("cost") or {}, ref.get("cost") or {}
    for what, a, b in (("device", cost.get("device"), ref_cost.get("device")),
                       ("processes", cost.get("num_processes"), ref_cost.get("num_processes")),
                       ("precision", _precision(summary.get("precision")), _precision(ref.get("precision"))),
                       ("torch", mine_v.get("torch"), ref_v.get("torch"))):
        if a != b:
            reasons.append(f"{what} (yours {a}, the reference's {b})")
    ref_kernel = ref_v.get("kernel") or (checked.get("kernel") if checked.get("exact") else None)
    if mine_v.get("kernel") and mine_v.get("kernel") != ref_kernel:
        reasons.append(f"CPU kernels (yours {mine_v['kernel'].split(';')[0]}, the reference's "
                       f"{(ref_kernel or 'not recorded').split(';')[0]}: another instruction set rounds differently)")
    if mine_v.get("git") != ref_v.get("git") and not (checked.get("status") == "reproduces"
                                                      and checked.get("checked_with") == mine_v.get("git")):
        reasons.append(f"code (yours {mine_v.get('git')}, the reference trained at {ref_v.get('git')}"
                       + (f", verified to reproduce at {checked.get('checked_with')}" if checked.get("status") ==
                          "reproduces" else ", not verified against yours") + ")")
    if reasons:
        return ("same seed, yet your run and the reference can differ through " + "; ".join(reasons)
                + ". Each changes the last digits of a step and training amplifies them over the run, like another "
                "seed: a gap within the reference's interval above says nothing about the method")
    return ("same seed, threads, device, precision, torch, CPU kernels and code as the reference: the numbers should "
            "be equal; a gap means the code or a library changed (python -m ssl_bench.reference verify)")


def _precision(value: Any) -> str:
    """A run's precision in words: None and 'no' both mean full float32."""
    return "float32" if value in (None, "no", "fp32") else f"mixed {value}"
