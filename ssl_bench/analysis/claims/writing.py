"""The claims report: results/claims.md (:func:`write`: the verdicts table, then one section per claim with its
command, seeds, numbers, comparisons and figure), :func:`check` (check=true: the shipped report equals the
regenerated one) and the command line (:data:`COMMAND`, :func:`main`). Imports the other modules of
ssl_bench.analysis.claims, ssl_bench.analysis.report, records and configuration, and the comparison's verdict
words (lazily)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from ssl_bench.analysis import decisions as dc
from ssl_bench.analysis.claims.figure import claim_figure
from ssl_bench.analysis.claims.planning import (
    METRICS,
    NOT_RUN,
    ROOT,
    Cell,
    claim_variants,
    effect_text,
    margin_of,
    paper_effect,
    read_claims,
    scale_of,
    study_command,
)
from ssl_bench.analysis.claims.verdicts import Evaluated, Outcome, evaluate
from ssl_bench.analysis.report import Stat, display, markdown_table, num, t_interval
from ssl_bench.common.skipped import note as skipped_note
from ssl_bench.config.overrides import Command, Key, help_requested
from ssl_bench.records.io import REFERENCE_DIR, below_floor, write_atomic
from ssl_bench.records.layout import ResultsLayout

# The command's help: its usage and, after the keys, where the claims are and how they are tested.
DOC = """Entry point: the papers' claims, tested at small scale, written to results/claims.md from the shipped records.

    python -m ssl_bench.claims                  # write results/claims.md and results/reference/figures/claims/
    python -m ssl_bench.claims check=true       # exit 1 if results/claims.md differs from the regenerated one

The claims, their studies and the verdict rules (with their dated revisions) are in experiments/claims.yaml. Each
claim's runs are the planned runs of its study (``ssl_bench.compare``, one configuration per variant, paired
by seed) at the seeds its pilot asks for (:func:`design`); nothing is trained here: a claim whose runs are missing
says so, with its command. Decisions come from ssl_bench.analysis.decisions: each claim's comparisons on one protocol
form one family, decided by one family-wise rule (decisions.RULE: paired t-tests and TOST together; better / worse /
equivalent / underpowered, with the seeds that would decide and their range), each verdict read against the paper's
effect and marked fragile when leaving out one seed changes it.
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
        low = sum(bool(below_floor(x.get("metrics", {}))) for x in c.summaries.values())
        mark = f" ({low} of {len(c.summaries)} below their random-init floor)" if low else ""
        rows.append([(f"{display(c.method)}, " if multi else "") + c.variant + mark,
                     f"{len(c.summaries)} of {len(c.seeds)}",
                     _ci(c.stat("knn_top1")), _ci(c.stat("linear.top1")), num(loss.mean, 3),
                     num(ent.mean, 2), num(used.mean, 0)])
    return markdown_table(["configuration", "n (runs of seeds)", "kNN top-1 (95% CI)", "linear top-1 (95% CI)",
                           "final loss", "final assignment entropy", "prototypes in use"], rows)


def _p(p: float) -> str:
    return "—" if not math.isfinite(p) else f"{p:.2g}"


def _ps(raw: float, adjusted: float) -> str:
    """'0.049 → 0.098': the raw p and the family-adjusted p the decision reads."""
    return "—" if not math.isfinite(raw) else f"{_p(raw)} → {_p(adjusted)}"


def _interval(lo_hi: tuple[float, float], n: int) -> str:
    return "—" if n < 2 else f"{lo_hi[0]:+.1f} to {lo_hi[1]:+.1f}"


def comparisons_table(ev: Evaluated) -> str:
    """Every comparison behind the verdict, on both protocols (one family each): its pairs and unpaired seeds, Δ
    with its 95% and 90% intervals, the t-test's and the TOST's p raw and adjusted under decisions.RULE, MDE, the
    decision, whether one seed decides it, and what this row says about the claim."""
    rows = []
    for metric, out in ev.outcomes.items():
        for c in out.comparisons:
            d = c.decision
            rows.append([METRICS[metric] + (" (primary)" if metric == ev.primary else ""), c.name,
                         c.pairing.text(), "—" if d.n < 1 else f"{d.mean:+.1f} ({_interval(d.ci95, d.n)})",
                         _interval(d.ci90, d.n), _ps(d.p_difference, d.p_difference_adjusted),
                         _ps(d.p_tost, d.p_tost_adjusted) + f" (±{d.margin:g})", num(d.mde), d.text(),
                         ("**" + c.fragility.text() + "**") if c.fragility.fragile else
                         ("—" if d.n < 2 else "no"), c.says])
    if not rows:
        return ""
    return markdown_table(["protocol", "comparison", "pairs", "Δ (95% CI)", "90% CI", "t-test p, raw → adjusted",
                           "TOST p, raw → adjusted", "MDE", "decision", "one seed decides it", "says"], rows)


def fragile_note(out: Outcome) -> str:
    """'' or 'fragile: hard codes vs soft codes is underpowered without seed 0 or 2' (the comparisons whose word
    one seed decides, and the word each gets without it)."""
    parts = []
    for c in out.fragile:
        by_word: dict[str, list[int]] = {}
        for s, w in sorted(c.fragility.flips.items()):
            by_word.setdefault(w, []).append(s)
        for w, seeds in by_word.items():
            listed = ", ".join(map(str, seeds[:-1])) + (" or " if len(seeds) > 1 else "") + str(seeds[-1])
            parts.append(f"{c.name} is {w} without seed {listed}")
    return ("fragile: " + "; ".join(parts)) if parts else ""


def _earlier(claim: dict[str, Any]) -> dict[str, str]:
    """The claim's earlier verdicts by the date of the rules they were reached under, newest first."""
    return {str(k): str(v) for k, v in (claim.get("earlier") or {}).items()}


def _verdict(ev: Evaluated, out: Outcome | None = None, so_far: str = "", bold: bool = True) -> str:
    """The verdict, what is still missing, and the fragile mark (bold unless the whole sentence is)."""
    out = out or ev.outcomes[ev.primary]
    frail = fragile_note(out)
    return out.verdict + so_far + ((f"; **{frail}**" if bold else f"; {frail}") if frail else "")


def claim_section(ev: Evaluated, data: dict[str, Any], figures: Path | None) -> str:
    claim, cells = ev.claim, ev.cells
    common = [str(x) for x in data.get("common") or []]
    used = [c for c in cells.values() if c.variant in claim_variants(claim["test"])]
    missing = sum(len(c.missing) for c in used)
    planned = sum(len(c.seeds) for c in used)
    refused = [r for c in used for r in c.refused]
    verdict = _verdict(ev, so_far="" if not missing or ev.verdict == NOT_RUN else
                       f" so far: {missing} of {planned} planned runs missing", bold=False)
    other = [m for m in ev.outcomes if m != ev.primary]
    earlier = _earlier(claim)
    lines = [f"## Claim {claim['id']}: {claim['title']}", "",
             f"**{claim['paper']}, {claim['where']}**: \"{claim['statement']}\"", "",
             f"Paper's numbers: {claim['paper_numbers']}.", ""]
    if claim["test"]["kind"] != "collapse":
        effect = paper_effect(claim)
        lines += [f"Paper's effect, in points of {METRICS[ev.primary]}: {effect_text(effect)}"
                  + (f" ({claim['paper_effect_why']})" if claim.get("paper_effect_why") else "") + "; margin "
                  f"±{margin_of(claim, data):g}"
                  + (f" ({claim['margin_why']})" if claim.get("margin_why") else "") + ".", ""]
    if claim.get("added_after"):
        lines += [f"**Added after the runs began**: {claim['added_after']}", ""]
    lines += [f"Tested at: {scale_of(used) or 'no records yet'}.", "",
              f"Our command: `{study_command(claim['study'], common, ev.seeds)}`", "",
              f"Seeds: {ev.design}.", "",
              f"**Verdict ({ev.measure}" + (", the paper's protocol" if ev.claim["test"]["kind"] != "collapse" else "")
              + f"): {verdict}.**"
              + (" The command trains the missing runs." if missing else "")
              + "".join(f" On {METRICS[m]}: {_verdict(ev, ev.outcomes[m])}." for m in other)
              + "".join(f" Earlier (rules of {k}): {v}." for k, v in earlier.items()), ""]
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


def _class(verdict: str) -> str:
    """A verdict's outcome without its details or its scope: 'underpowered at this scale: n = 8 ...' and
    'underpowered (n=8 would decide)' are both 'underpowered'."""
    return re.split(r" \(|: |, smaller|, larger|; ", verdict.replace(" at this scale", ""), maxsplit=1)[0]


def revision_outcome(evs: list[Evaluated], replaces: str) -> str:
    """What a revision changed, from the verdicts: the claims whose primary verdict reaches another outcome than the
    one reached under the rules of ``replaces`` (the wording aside), and the verdicts one seed decides."""
    changed = [f"claim {ev.claim['id']} ({_earlier(ev.claim)[replaces]} → {ev.verdict})" for ev in evs
               if replaces in _earlier(ev.claim) and _class(_earlier(ev.claim)[replaces]) != _class(ev.verdict)]
    frail = [str(ev.claim["id"]) for ev in evs if ev.outcomes[ev.primary].fragile]
    return (f"Under it {len(changed)} of {len(evs)} claims reach another outcome on their primary protocol"
            + (": " + "; ".join(changed) if changed else "") + ". "
            + (f"One seed decides the primary verdict of claim{'s' if len(frail) > 1 else ''} {', '.join(frail)} "
               "(marked fragile)." if frail else "No primary verdict changes when any one seed is left out."))


FAMILY = ("Here a family is one claim's comparisons on one protocol (the rows of one protocol in the claim's "
          "table): a claim's two protocols are two families, and claims are not corrected for each other.")


def records_caption(evs: list[Evaluated]) -> str:
    """The budget and protocols of every record the claims read, in words from the records' configs
    (report.budget_caption: what they share, and the keys that vary between studies), never typed by hand."""
    from ssl_bench.analysis.report import budget_caption, linear_protocol, protocol

    cfgs, budgets = [], set()
    for ev in evs:
        for c in ev.cells.values():
            for s, d in sorted(c.run_dirs.items()):
                if (d / "config.yaml").exists():
                    cfgs.append(yaml.safe_load((d / "config.yaml").read_text()))
                    budgets.add(str(c.summaries.get(s, {}).get("budget", "?")))
    if not cfgs:
        return "No records yet."
    return (f"{budget_caption(cfgs, ' / '.join(sorted(budgets)))} Accuracy: {protocol(cfgs[0])}; linear: "
            f"{linear_protocol(cfgs[0])}.")


def evaluate_all(ref: Path = REFERENCE_DIR, data: dict | None = None) -> list[Evaluated]:
    """Every claim of ``data`` (experiments/claims.yaml) evaluated on the records in ``ref``."""
    data = data or read_claims()
    return [evaluate(claim, data, ref) for claim in data.get("claims") or []]


def write(out: Path, ref: Path = REFERENCE_DIR, figures: Path | None = None, data: dict | None = None,
          evs: list[Evaluated] | None = None) -> str:
    """Write the claims report to ``out`` (and figures to ``figures``); returns its text. ``evs``: the claims
    already evaluated on ``ref`` (:func:`evaluate_all`), so a caller that counts them does not evaluate twice."""
    from ssl_bench.analysis.report import STATS

    data = data or read_claims()
    evs = evaluate_all(ref, data) if evs is None else evs
    sections = [claim_section(ev, data, figures) for ev in evs]
    rules = list(dict.fromkeys(k for ev in evs for k in _earlier(ev.claim)))
    verdicts = [[str(ev.claim["id"]), ev.claim["paper"], ev.claim["title"], ev.measure,
                 str(len(ev.seeds)), _verdict(ev),
                 "; ".join(f"{METRICS[m]}: {_verdict(ev, o)}" for m, o in ev.outcomes.items() if m != ev.primary)
                 or "—", *(_earlier(ev.claim).get(k, "—") for k in rules)] for ev in evs]
    head = ["# The papers' claims, tested at small scale", "",
            "Generated by `python -m ssl_bench.claims` from the shipped records in results/reference/runs (the "
            "claims, their studies and the verdict rules are in experiments/claims.yaml). " + records_caption(evs)
            + " Each claim states the scale its records ran at. n is the number of seeds. " + STATS
            + " Comparisons are paired by seed; each row lists its pairs and any seed one side "
            "lacks. Each claim's verdict reads its primary metric, the protocol its paper quotes; the other "
            "protocol is tested the same way and shown beside it.", "",
            f"**The rule.** {dc.RULE} {FAMILY} An underpowered comparison gives the pairs that would decide its "
            "margin at 80% power from its sd, with the range the sd's 95% interval allows. A comparison is "
            "*fragile* when leaving out one seed (the whole family decided again) changes its word; the seed is "
            "named.", "",
            "What a verdict says, at the scale that was run: *reproduced at this scale* (significant in the "
            "paper's direction, and the 95% interval reaches the paper's effect); *direction only at this scale, "
            "smaller (or larger) than the paper's* (significant in the paper's direction, but the 95% interval "
            "excludes the paper's effect, or the paper gives no number); *not reproduced at this scale* "
            "(significant the other way, or equivalent within the margin, which is smaller than the paper's "
            "effect: an effect of the paper's size is ruled out); *underpowered at this scale* (neither: the n "
            f"that would decide it is given; seeds are capped at {data.get('max_seeds', 8)}); *not run yet*. An "
            "equivalence claim is reproduced when every comparison is equivalent within its margin.", ""]
    revisions = data.get("revisions") or []
    latest = max((str(r["date"]) for r in revisions), default="")
    for r in revisions:  # the newest revision's outcome is today's verdicts against the ones it replaced
        outcome = f" {revision_outcome(evs, str(r['replaces']))}" if str(r["date"]) == latest else ""
        head += [f"**Revision {r['date']}**: {r['what']}{outcome} The verdicts before it are kept in the column "
                 f"\"earlier (rules of {r.get('replaces', '')})\" ({r.get('earlier', 'kNN, n = 3')}).", ""]
    disclosed = [ev.claim for ev in evs if ev.claim.get("added_after")]
    if disclosed or data.get("disclosure"):
        head += ["**Not all of the design came before the runs**: " + " ".join(
            [str(data.get("disclosure", ""))] + [f"Claim {c['id']}: {c['added_after']}" for c in disclosed]).strip(),
            ""]
    head += [markdown_table(["claim", "paper", "statement", "verdict reads", "seeds planned", "verdict",
                             "other protocol", *(f"earlier (rules of {k})" for k in rules)], verdicts)]
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


def check(evs: list[Evaluated] | None = None) -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        new = write(Path(tmp) / "claims.md", evs=evs)
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
