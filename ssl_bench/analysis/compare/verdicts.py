"""The comparison table's verdicts (issue 30): every family of the table (one protocol x one variant's comparisons
against the reference method; one protocol's gains over the baseline variant) decided by
ssl_bench.analysis.decisions under its one rule (:data:`~ssl_bench.analysis.decisions.RULE`): the seeds paired
with the unshared ones listed (``decisions.paired``), better / worse / equivalent / underpowered under one
family-wise correction (``decide_family``), leave-one-seed-out fragility (``fragile``), the pairs an underpowered
comparison needs (``seeds_needed``) and, where both sides' records keep per-test-image predictions, the interval
over seeds and test images (``paired_images``, ``bootstrap_difference``). :func:`decide_table` stores one
:class:`Decided` per comparison in the table and its numbers in flat columns. Reads predictions.npz, writes
nothing; imports the plan (ssl_bench.analysis.compare.planning), the decisions and the records' reader."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.analysis.compare.planning import Plan
from ssl_bench.analysis.decisions import (
    BETTER,
    CONFIDENCE,
    EQUIVALENT,
    UNDERPOWERED,
    WORSE,
    Bootstrap,
    Fragility,
    Pairing,
    SeedsNeeded,
    Verdict,
    bootstrap_difference,
    decide_family,
    fragile,
    paired,
    paired_images,
    seeds_needed,
)
from ssl_bench.records.io import read_predictions

# The accuracy column -> the protocol its predictions are kept under (predictions.npz).
PROTOCOLS = {"knn_top1": "knn", "linear_top1": "linear"}
RESAMPLES, RNG_SEED = 2000, 0  # the bootstrap's draws, fixed so a regenerated table is byte-equal
WORDS = (BETTER, WORSE, EQUIVALENT, UNDERPOWERED)


def _f(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}"


@dataclass(frozen=True)
class Decided:
    """One comparison of the table: the family it was decided in, its :class:`Verdict`, leave-one-seed-out
    :class:`Fragility`, the pairs that would decide it when underpowered, and the seed + test-set interval
    (:class:`Bootstrap`) when both sides keep predictions on at least 2 shared seeds (else ``boot_why``)."""

    family: str
    verdict: Verdict
    fragility: Fragility
    needed: SeedsNeeded | None
    boot: Bootstrap | None
    boot_why: str = ""

    @property
    def pairing(self) -> Pairing:
        return self.verdict.pairing or Pairing((), ())

    @property
    def word(self) -> str:
        return self.verdict.word

    def unpaired(self) -> str:
        """'seed 5 (reference only)', or '' when every seed is paired."""
        p = self.pairing
        return ", ".join([f"seed {s} (reference only)" for s in p.only_reference]
                         + [f"seed {s} (method only)" for s in p.only_method])

    def delta(self) -> str:
        """'+0.2 (n=8; 95% CI -0.2 to +0.6)', with the unpaired seeds listed (Pairing.text())."""
        v = self.verdict
        if v.n == 0:
            out = "— (n=0)"
        elif v.n == 1:
            out = f"{_f(v.mean)} (n=1)"
        else:
            out = f"{_f(v.mean)} (n={v.n}; 95% CI {_f(v.ci95[0])} to {_f(v.ci95[1])})"
        return out + (f"; {self.pairing.text()}" if self.unpaired() else "")

    def interval(self) -> str:
        """The seed + test-set interval: '+0.1 (n=2 seeds x 10000 images; 95% CI -0.9 to +1.1)', or '—'."""
        b = self.boot
        if b is None or not all(math.isfinite(x) for x in b.ci):
            return "—"
        return (f"{_f(b.mean)} (n={b.n_seeds} seeds x {b.n_images} images; {CONFIDENCE:.0%} CI {_f(b.ci[0])} to "
                f"{_f(b.ci[1])})")

    def text(self) -> str:
        """The verdict in words: Verdict.text(), the pairs that would decide it when underpowered, and
        '— fragile: without seed 3 it is equivalent' when one seed decides it."""
        out = self.verdict.text()
        if self.needed is not None:
            out += f"; {self.needed.text()} would decide ±{self.verdict.margin:g}"
        if self.fragility.fragile:
            out += f" — {self.fragility.text()}"
        return out

    def columns(self) -> dict[str, Any]:
        """The flat fields of table.csv (one prefix per comparison kind)."""
        v, b, n = self.verdict, self.boot, self.needed
        return {"diff": v.mean, "ci_lo": v.ci95[0], "ci_hi": v.ci95[1], "n": v.n, "sd": v.sd, "p": v.p_difference,
                "p_tost": v.p_tost, "p_adjusted": v.p_difference_adjusted, "p_tost_adjusted": v.p_tost_adjusted,
                "ci90_lo": v.ci90[0], "ci90_hi": v.ci90[1], "margin": v.margin, "mde": v.mde,
                "n_needed": n.n if n else math.nan, "n_needed_lo": n.lo if n else math.nan,
                "n_needed_hi": n.hi if n else math.nan, "decision": v.word, "verdict": self.text(),
                "significant": v.word in (BETTER, WORSE), "unpaired": self.unpaired(),
                "fragile_seeds": " ".join(str(s) for s in sorted(self.fragility.flips)),
                "boot_mean": b.mean if b else math.nan, "boot_ci_lo": b.ci[0] if b else math.nan,
                "boot_ci_hi": b.ci[1] if b else math.nan, "boot_seeds": b.n_seeds if b else 0,
                "boot_share_test": b.share_test if b else math.nan}

    def record(self) -> dict[str, Any]:
        """comparison.json's entry (NaN as null)."""
        v, b, n = self.verdict, self.boot, self.needed
        out = {"family": self.family, "word": v.word, "verdict": self.text(), "delta": v.mean, "n": v.n,
               "seeds": list(self.pairing.seeds), "ci95": list(v.ci95), "ci90": list(v.ci90), "sd": v.sd,
               "p_difference": v.p_difference, "p_tost": v.p_tost, "p_difference_adjusted": v.p_difference_adjusted,
               "p_tost_adjusted": v.p_tost_adjusted, "margin": v.margin, "mde": v.mde, "reason": v.reason,
               "unpaired": {"reference_only": list(self.pairing.only_reference),
                            "method_only": list(self.pairing.only_method)},
               "fragile": {str(s): w for s, w in sorted(self.fragility.flips.items())},
               "seeds_needed": {"n": n.n, "lo": n.lo, "hi": n.hi, "cap": n.cap} if n else None,
               "bootstrap": None if b is None else {
                   "mean": b.mean, "ci95": list(b.ci), "ci95_percentile": list(b.ci_percentile),
                   "seed_ci95": list(b.seed_ci), "var_seed": b.var_seed, "var_test": b.var_test,
                   "share_test": b.share_test, "n_seeds": b.n_seeds, "n_images": b.n_images,
                   "resamples": b.resamples, "rng_seed": b.rng_seed},
               "bootstrap_missing": self.boot_why}
        return _nulls(out)


def _nulls(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nulls(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nulls(v) for v in x]
    return x


def has_predictions(path: str | Path) -> bool:
    return (Path(path) / "predictions.npz").exists()


class _Predictions:
    """Each record's predictions read once (None for a record without them)."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}

    def __call__(self, path: str | None) -> Any:
        if path is None:
            return None
        if path not in self.cache:
            self.cache[path] = read_predictions(path) if has_predictions(path) else None
        return self.cache[path]


def _bootstrap(pairing: Pairing, ref_paths: Mapping[int, str], paths: Mapping[int, str], protocol: str,
               predictions: _Predictions) -> tuple[Bootstrap | None, str]:
    """The seed + test-set interval on the paired seeds where both records keep predictions."""
    ref = {s: predictions(ref_paths.get(s)) for s in pairing.seeds}
    met = {s: predictions(paths.get(s)) for s in pairing.seeds}
    try:
        images = paired_images(ref, met, protocol)
    except (KeyError, ValueError) as exc:
        return None, str(exc)
    if len(images.seeds) < 2:
        return None, (f"{len(images.seeds)} of {pairing.n} paired seeds keep predictions on both sides; the interval "
                      "needs 2")
    return bootstrap_difference(images.correct, RESAMPLES, RNG_SEED), ""


def _family(table: pd.DataFrame, rows: Mapping[int, int], col: str, name: str, margin: float, images: bool,
            predictions: _Predictions) -> dict[int, Decided]:
    """Decide one family: ``rows`` maps each compared row to the row it is compared against."""
    pairings = {str(i): paired(table.at[r, "_seeds"][col], table.at[i, "_seeds"][col]) for i, r in rows.items()}
    verdicts = decide_family(pairings, margin)
    flips = fragile(pairings, margin)
    out = {}
    for i, r in rows.items():
        v, p = verdicts[str(i)], pairings[str(i)]
        needed = (seeds_needed(v.sd, v.n, margin) if v.word == UNDERPOWERED and v.n >= 2 and math.isfinite(v.sd)
                  else None)
        boot, why = (_bootstrap(p, table.at[r, "_paths"], table.at[i, "_paths"], PROTOCOLS[col], predictions)
                     if images and col in PROTOCOLS else (None, "not computed"))
        out[i] = Decided(name, v, flips[str(i)], needed, boot, why)
    return out


def decide_table(table: pd.DataFrame, plan: Plan, accuracies: Mapping[str, str], images: bool = True) -> None:
    """Decide every family of the table in place: ``_decided`` (per row: prefix -> :class:`Decided`, prefixes
    ``<col>_vs_ref`` and ``<col>_vs_baseline``) and the flat ``<prefix>_<field>`` columns. ``images=False`` skips
    the bootstrap (the seeds=auto pilot needs only the variances)."""
    table["_decided"] = [{} for _ in table.index]
    predictions = _Predictions()
    fields: dict[str, dict[int, Any]] = {}
    ref_name = next(iter(table.loc[table["method"] == plan.reference, "method_name"]), plan.reference)
    for col, words in accuracies.items():
        if f"{col}_mean" not in table:
            continue
        for v in plan.variants:  # each method against the reference method, within the variant
            ref = table[(table["variant"] == v.name) & (table["method"] == plan.reference)]
            idx = [i for i in table.index
                   if table.at[i, "variant"] == v.name and table.at[i, "method"] != plan.reference]
            if ref.empty or not idx:
                continue
            where = f" [{v.name}]" if len(plan.variants) > 1 else ""
            family = _family(table, dict.fromkeys(idx, ref.index[0]), col, f"{words}{where} vs {ref_name}",
                             plan.margin, images, predictions)
            _store(fields, table, f"{col}_vs_ref", family)
        if plan.baseline:  # each variant against the baseline variant, per method (e.g. the multi-crop gain)
            base = {m: table.index[(table["variant"] == plan.baseline) & (table["method"] == m)][0]
                    for m in plan.methods}
            rows = {i: base[table.at[i, "method"]] for i in table.index if table.at[i, "variant"] != plan.baseline}
            family = _family(table, rows, col, f"{words} gain over '{plan.baseline}'", plan.margin, images,
                             predictions)
            _store(fields, table, f"{col}_vs_baseline", family)
    for name, values in fields.items():  # one column at a time: pandas infers its type (floats stay floats)
        table[name] = pd.Series(values).reindex(table.index)


def _store(fields: dict[str, dict[int, Any]], table: pd.DataFrame, prefix: str, decided: Mapping[int, Decided]
           ) -> None:
    for i, d in decided.items():
        table.at[i, "_decided"][prefix] = d
        for k, x in d.columns().items():
            fields.setdefault(f"{prefix}_{k}", {})[i] = x


def decided(table: pd.DataFrame, prefix: str) -> list[tuple[pd.Series, Decided]]:
    """The rows of the table with a decision of kind ``prefix``, in the table's order."""
    return [(r, r["_decided"][prefix]) for _, r in table.iterrows()
            if isinstance(r.get("_decided"), dict) and prefix in r["_decided"]]


def counts(ds: list[Decided]) -> str:
    """'3 better, 4 worse, 1 equivalent, 0 underpowered; 2 fragile', counted from the verdicts."""
    words = ", ".join(f"{sum(d.word == w for d in ds)} {w}" for w in WORDS)
    return words + f"; {sum(d.fragility.fragile for d in ds)} fragile"
