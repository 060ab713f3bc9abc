"""The claims report: results/claims.md (:func:`write`: the verdicts table, then one section per claim with its
command, seeds, numbers, comparisons and figure), :func:`check` (check=true: the shipped report equals the
regenerated one) and the command line (:data:`COMMAND`, :func:`main`). Imports the other modules of
ssl_bench.analysis.claims, ssl_bench.analysis.report, records and configuration, and the comparison's verdict
words (lazily)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ssl_bench.analysis.claims.figure import claim_figure
from ssl_bench.analysis.claims.planning import METRICS, NOT_RUN, ROOT, Cell, claim_variants, read_claims, study_command
from ssl_bench.analysis.claims.verdicts import Evaluated, evaluate
from ssl_bench.analysis.report import (
    DEFAULT_MARGIN,
    Stat,
    display,
    fmt_delta,
    holm,
    interval90,
    markdown_table,
    num,
    t_interval,
)
from ssl_bench.common.skipped import note as skipped_note
from ssl_bench.config.overrides import Command, Key, help_requested
from ssl_bench.records.io import REFERENCE_DIR, write_atomic
from ssl_bench.records.layout import ResultsLayout

# The command's help: its usage and, after the keys, where the claims are and how they are tested.
DOC = """Entry point: the papers' claims, tested at small scale, written to results/claims.md from the shipped records.

    python -m ssl_bench.claims                  # write results/claims.md and results/reference/figures/claims/
    python -m ssl_bench.claims check=true       # exit 1 if results/claims.md differs from the regenerated one

The claims, their studies and the verdict rules (with their dated revisions) are in experiments/claims.yaml. Each
claim's runs are the planned runs of its study (``ssl_bench.compare``, one configuration per variant, paired
by seed) at the seeds its pilot asks for (:func:`design`); nothing is trained here: a claim whose runs are missing
says so, with its command. Statistics come from ssl_bench.analysis.report (95% t-intervals, paired t-tests with Holm
within a
claim and over the report, TOST, MDE: better / worse / equivalent / underpowered).
"""


def _last(cell: Cell, key: str) -> Stat:
    vals = []
    for rows in cell.epochs.values():
        xs = [r[key] for r in rows if r.get(key) is not None]
        if xs:
            vals.append(xs[-1])
    return t_interval(vals)


def _ci(s: Stat) -> str:
    if s.n == 0:
        return "—"
    if s.n == 1:
        return f"{s.mean:.1f} (n=1)"
    return f"{s.mean:.1f} ({s.lo:.1f}–{s.hi:.1f})"


def numbers_table(cells: dict[tuple[str, str], Cell]) -> str:
    multi = len({m for _, m in cells}) > 1
    rows = []
    for c in cells.values():
        ent, used, loss = _last(c, "assign_entropy"), _last(c, "prototypes_used"), _last(c, "loss")
        rows.append([(f"{display(c.method)}, " if multi else "") + c.variant, f"{len(c.summaries)} of {len(c.seeds)}",
                     _ci(c.stat("knn_top1")), _ci(c.stat("linear.top1")), num(loss.mean, 3),
                     num(ent.mean, 2), num(used.mean, 0)])
    return markdown_table(["configuration", "n (runs of seeds)", "kNN top-1 (95% CI)", "linear top-1 (95% CI)",
                           "final loss", "final assignment entropy", "prototypes in use"], rows)


def _p(p: float) -> str:
    return "—" if not math.isfinite(p) else f"{p:.2g}"


def comparisons_table(ev: Evaluated) -> str:
    """Every comparison behind the verdict, on both protocols: Δ with its 95% and 90% intervals, Holm within the
    claim and over the report, TOST, MDE and what it says."""
    rows = []
    for metric, out in ev.outcomes.items():
        for c in out.comparisons:
            lo90, hi90 = interval90(c.test)
            d = c.decision
            rows.append([METRICS[metric] + (" (primary)" if metric == ev.primary else ""), c.name, str(c.test.n),
                         fmt_delta(c.test), "—" if c.test.n < 2 else f"{lo90:+.1f} to {hi90:+.1f}", _p(c.test.p_holm),
                         _p(c.p_report) if metric == ev.primary else "—", f"{_p(d.p_tost)} (±{d.margin:g})",
                         num(d.mde), d.text() if c.test.n >= 2 else "—", c.verdict])
    if not rows:
        return ""
    return markdown_table(["protocol", "comparison", "n", "Δ (95% CI)", "90% CI", "Holm p (claim)",
                           "Holm p (report)", "TOST p", "MDE", "decision", "says"], rows)


def claim_section(ev: Evaluated, data: dict[str, Any], figures: Path | None) -> str:
    claim, cells = ev.claim, ev.cells
    common = [str(x) for x in data.get("common") or []]
    used = [c for c in cells.values() if c.variant in claim_variants(claim["test"])]
    missing = sum(len(c.missing) for c in used)
    planned = sum(len(c.seeds) for c in used)
    refused = [r for c in used for r in c.refused]
    verdict = ev.verdict if not missing or ev.verdict == NOT_RUN else (
        f"{ev.verdict} so far: {missing} of {planned} planned runs missing")
    other = [m for m in ev.outcomes if m != ev.primary]
    earlier = claim.get("earlier") or {}
    lines = [f"## Claim {claim['id']}: {claim['title']}", "",
             f"**{claim['paper']}, {claim['where']}**: \"{claim['statement']}\"", "",
             f"Paper's numbers: {claim['paper_numbers']}.", ""]
    if claim.get("added_after"):
        lines += [f"**Added after the runs began**: {claim['added_after']}", ""]
    lines += [f"Our command: `{study_command(claim['study'], common, ev.seeds)}`", "",
              f"Seeds: {ev.design}.", "",
              f"**Verdict ({ev.measure}" + (", the paper's protocol" if ev.claim["test"]["kind"] != "collapse" else "")
              + f"): {verdict}.**"
              + (" The command trains the missing runs." if missing else "")
              + "".join(f" On {METRICS[m]}: {ev.outcomes[m].verdict}." for m in other)
              + (f" Earlier ({earlier.get('rules')}): {earlier.get('verdict')}." if earlier else ""), ""]
    if refused:
        lines += [f"**Refused** (today's code does not reproduce them; `python -m ssl_bench.reference verify`): "
                  f"{', '.join(refused)}.", ""]
    lines += [numbers_table(cells)]
    table = comparisons_table(ev)
    if table:
        lines += [table]
    out = ev.outcomes[ev.primary]
    if out.rows:
        lines += [markdown_table(out.header, out.rows)]
    if out.note:
        lines += [out.note, ""]
    lines += [f"Why the scale may matter: {claim['scale']}", ""]
    if any(c.summaries for c in cells.values()):  # the link does not depend on drawing (check=true draws nothing)
        if figures is not None:
            claim_figure(ev, figures)
        lines += [f"![claim {claim['id']}]({FIGURES.relative_to(ROOT)}/claim_{claim['id']}.png)", ""]
    return "\n".join(lines)


def write(out: Path, ref: Path = REFERENCE_DIR, figures: Path | None = None, data: dict | None = None) -> str:
    """Write the claims report to ``out`` (and figures to ``figures``); returns its text."""
    from ssl_bench.analysis.compare import verdict_words
    from ssl_bench.analysis.report import STATS

    data = data or read_claims()
    evs = [evaluate(claim, data, ref) for claim in data.get("claims") or []]
    # Holm over every primary comparison of the report, beside each claim's own.
    every = [c for ev in evs for c in ev.outcomes[ev.primary].comparisons if c.test.n >= 2]
    for c, q in zip(every, holm([c.test.p for c in every]), strict=True):
        c.p_report = q
    sections = [claim_section(ev, data, figures) for ev in evs]
    verdicts = [[str(ev.claim["id"]), ev.claim["paper"], ev.claim["title"], ev.measure,
                 str(len(ev.seeds)), ev.verdict,
                 "; ".join(f"{METRICS[m]}: {o.verdict}" for m, o in ev.outcomes.items() if m != ev.primary) or "—",
                 (ev.claim.get("earlier") or {}).get("verdict", "—")] for ev in evs]
    rev = data.get("revisions") or []
    head = ["# The papers' claims, tested at small scale", "",
            "Generated by `python -m ssl_bench.claims` from the shipped records in results/reference/runs (the "
            "claims, their studies and the verdict rules are in experiments/claims.yaml). Demo budget on "
            "Fashion-MNIST: small convnet, 4096 pretraining images, batch 64, 10 epochs, crops 2x28+4x14, AdamW; "
            "kNN top-1 (k=20) and a linear probe (cached features, 100 epochs) on frozen backbone features, "
            "10000 train / 10000 test images. n is the number of seeds. " + STATS + " Comparisons are paired by "
            "seed. Each claim's verdict reads its primary metric, the protocol its paper quotes; the other protocol "
            "is tested the same way and shown beside it. " + verdict_words(
                float(data.get("margin", DEFAULT_MARGIN)), "the comparisons of one claim and protocol (each "
                "claim's own margin; the report-wide Holm over every primary comparison is shown beside it)"),
            "", "What a verdict says: *reproduced* (significant in the paper's direction; *in direction only* when "
            "TOST also puts the difference inside the margin: real, but smaller than the margin); *not reproduced* "
            "(significant the other way, or equivalent within the margin: an effect of that size is ruled out); "
            "*underpowered* (neither: the n that would decide it is given; seeds are capped at "
            f"{data.get('max_seeds', 8)}); *not run yet*.", ""]
    for r in rev:
        head += [f"**Revision {r['date']}**: {r['what']} The verdicts before it are kept in the column "
                 f"\"earlier\" ({r.get('earlier', 'kNN, n = 3')}).", ""]
    disclosed = [ev.claim for ev in evs if ev.claim.get("added_after")]
    if disclosed or data.get("disclosure"):
        head += ["**Not all of the design came before the runs**: " + " ".join(
            [str(data.get("disclosure", ""))] + [f"Claim {c['id']}: {c['added_after']}" for c in disclosed]).strip(),
            ""]
    head += [markdown_table(["claim", "paper", "statement", "verdict reads", "seeds planned", "verdict",
                             "other protocol", "earlier"], verdicts)]
    text = "\n".join(head + sections) + skipped_note()
    write_atomic(out, text)
    return text


OUT = ROOT / "results" / "claims.md"
FIGURES = ResultsLayout(REFERENCE_DIR).figures("claims")
COMMAND = Command(
    "ssl_bench.claims", DOC.split("\n\nThe claims")[0],
    (Key("check", "bool", False, "regenerate into a temporary file and compare with results/claims.md; exit 1 if "
         "it differs"),
     Key("out", "str", None, "where to write the report (null: results/claims.md)"),
     Key("figures", "bool", True, "also draw one figure per claim (results/reference/figures/claims/)")),
    footer=DOC.split("\n\n", 2)[2])


def check() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        new = write(Path(tmp) / "claims.md")
    return OUT.exists() and OUT.read_text() == new


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    own, _, _ = COMMAND.parse(argv)
    if own["check"]:
        same = check()
        print("results/claims.md: " + ("equal to the regenerated report" if same else "differs from the records; "
                                       "run python -m ssl_bench.claims"))
        return 0 if same else 1
    out = Path(own["out"]) if own["out"] else OUT
    write(out, figures=FIGURES if own["figures"] else None)
    print(out)
    return 0
