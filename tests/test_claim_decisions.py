"""The claims report decided by ssl_bench.analysis.decisions (issue 30): verdicts read against the paper's effect,
margins checked against it, one family-wise rule, fragile verdicts marked, each row's own verdict, and seeds needed
with their range. Constructed cells only (fast)."""

import re

import pytest

from ssl_bench.analysis import claims as cl
from ssl_bench.analysis.claims import DIRECTION, NOT_REPRODUCED, REPRODUCED, UNDERPOWERED_HERE, Cell
from ssl_bench.analysis.decisions import EQUIVALENT
from ssl_bench.errors import ConfigError

BASE = [80.0, 79.0, 80.5]


def cell(variant: str, values: list[float], method: str = "swav") -> Cell:
    c = Cell(variant, method, list(range(len(values))))
    for s, v in enumerate(values):
        c.summaries[s] = {"metrics": {"knn_top1": v}}
    return c


def cells(*cs: Cell) -> dict:
    return {(c.variant, c.method): c for c in cs}


def shifted(by: list[float], base: list[float] = BASE) -> list[float]:
    return [b + d for b, d in zip(base, by, strict=True)]


GAIN = {"kind": "gain", "baseline": "a", "variants": ["b"], "expect": "lower"}


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of a markdown table, as cells."""
    return [[x.strip() for x in line.strip("|").split("|")] for line in markdown.splitlines()[2:] if line.strip()]


# -- reproduced needs the paper's effect inside the 95% interval -----------------------------------------------
def test_a_significant_effect_whose_interval_excludes_the_papers_is_direction_only():
    cs = cells(cell("a", BASE), cell("b", shifted([-0.3, -0.25, -0.35])))  # -0.3 +- 0.12: excludes -0.6
    out = cl.gain(GAIN, cs, "knn_top1", 0.2, (-0.6, -0.6))
    v = out.comparisons[0].decision
    assert v.word == "worse" and v.ci95[0] > -0.6
    assert out.verdict == f"{DIRECTION}, smaller than the paper's -0.6"
    assert not out.verdict.startswith(REPRODUCED)
    assert cl.gain(GAIN, cs, "knn_top1", 0.2, (-0.4, -0.2)).verdict == REPRODUCED  # an effect it does reach
    larger = cl.gain(GAIN, cs, "knn_top1", 0.1, (-0.15, -0.12)).verdict
    assert larger == f"{DIRECTION}, larger than the paper's -0.15 to -0.12"
    assert cl.gain(GAIN, cs, "knn_top1", 0.2).verdict.startswith(DIRECTION)  # no number: never reproduced


# -- a margin must be smaller than the paper's effect ----------------------------------------------------------
CLAIMS = """margin: 0.5
claims:
  - id: 3
    title: t
    study: s
    paper_effect: {effect}
    test: {{kind: equivalent, baseline: a, variants: [b], margin: {margin}}}
"""


@pytest.mark.parametrize(("effect", "margin"), [("[0.5, 1.1]", 1.0), ("-0.6", 0.6), ("[-0.2, 0.3]", 0.1)])
def test_a_margin_not_below_the_papers_effect_is_refused_in_one_line(tmp_path, effect, margin):
    path = tmp_path / "claims.yaml"
    path.write_text(CLAIMS.format(effect=effect, margin=margin))
    with pytest.raises(ConfigError) as e:
        cl.read_claims(path)
    msg = str(e.value)
    assert "\n" not in msg and "claim 3" in msg and f"±{margin:g}" in msg and "smaller than the paper's effect" in msg


def test_a_margin_below_the_papers_effect_and_the_shipped_claims_are_accepted(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text(CLAIMS.format(effect="[0.5, 1.1]", margin=0.4))
    assert cl.read_claims(path)["claims"][0]["id"] == 3
    path.write_text(CLAIMS.format(effect="null", margin=0.4))
    with pytest.raises(ConfigError, match="paper_effect_why"):
        cl.read_claims(path)
    data = cl.read_claims()  # the shipped file: every margin below its paper's effect
    three = next(c for c in data["claims"] if c["id"] == 3)
    assert cl.margin_of(three, data) < cl.paper_effect(three)[0]


# -- one family-wise rule: TOST is corrected too ---------------------------------------------------------------
def test_a_tost_that_passes_uncorrected_but_not_under_the_family_rule_is_not_equivalent():
    test = {"kind": "equivalent", "baseline": "a", "variants": ["b", "c"], "margin": 0.5}
    cs = cells(cell("a", BASE), cell("b", shifted([-0.35, -0.05, 0.05])), cell("c", shifted([-0.35, -0.1, 0.05])))
    out = cl.equivalent(test, cs, "knn_top1", 0.5)
    for c in out.comparisons:
        assert c.decision.p_tost < 0.05 <= c.decision.p_tost_adjusted  # equivalent alone, not in the family
        assert c.decision.word != EQUIVALENT and c.says.startswith(UNDERPOWERED_HERE)
    assert out.verdict.startswith(UNDERPOWERED_HERE)
    alone = cl.equivalent({**test, "variants": ["b"]}, cs, "knn_top1", 0.5)
    assert alone.verdict == REPRODUCED  # the same comparison alone: a family of one, no correction


# -- fragile verdicts ------------------------------------------------------------------------------------------
def evaluated(test: dict, cs: dict, out: cl.Outcome) -> cl.Evaluated:
    return cl.Evaluated({"id": 1, "test": test}, cs, sorted({s for c in cs.values() for s in c.seeds}), "",
                        "knn_top1", {"knn_top1": out})


def test_a_verdict_one_seed_decides_is_marked_fragile_with_the_seed():
    # -1.0, -0.9, -1.1 and a fourth seed of +0.6: significant on 3 seeds only without seed 3.
    cs = cells(cell("a", [*BASE, 80.0]), cell("b", shifted([-1.0, -0.9, -1.1, 0.6], [*BASE, 80.0])))
    out = cl.gain(GAIN, cs, "knn_top1", 0.5, (-1.5, -0.5))
    c = out.comparisons[0]
    assert c.decision.word != "worse" and c.fragility.fragile and 3 in c.fragility.flips
    assert out.fragile == [c]
    note = cl.fragile_note(out)
    assert note.startswith("fragile: ") and "without seed" in note and "3" in note
    table = cl.comparisons_table(evaluated(GAIN, cs, out))
    assert "**fragile: without seed 3 it is worse" in table


def test_a_verdict_no_one_seed_decides_is_not_marked():
    cs = cells(cell("a", [*BASE, 80.0, 79.5, 80.2, 79.8, 80.4]),
               cell("b", shifted([-1.0, -0.9, -1.1, -1.0, -0.95, -1.05, -1.0, -0.9], [*BASE, 80.0, 79.5, 80.2,
                                                                                       79.8, 80.4])))
    out = cl.gain(GAIN, cs, "knn_top1", 0.5, (-1.5, -0.5))
    assert out.verdict == REPRODUCED and not out.fragile and cl.fragile_note(out) == ""
    assert table_rows(cl.comparisons_table(evaluated(GAIN, cs, out)))[0][-2] == "no"


# -- each row says its own verdict; every n visible ------------------------------------------------------------
def test_the_says_column_shows_each_rows_own_verdict_and_its_pairs():
    cs = cells(cell("a", BASE), cell("b", shifted([-1.0, -0.9, -1.1])),
               cell("a", [*BASE, 80.0], "carl"), cell("b", [80.5, 78.5, 80.9], "carl"))
    out = cl.gain(GAIN, cs, "knn_top1", 0.5, (-1.5, -0.5))
    rows = table_rows(cl.comparisons_table(evaluated(GAIN, cs, out)))
    says = {r[1]: r[-1] for r in rows}
    assert says["SwAV: b vs a"] == REPRODUCED
    assert says["CARL: b vs a"].startswith(UNDERPOWERED_HERE)
    assert out.verdict not in says.values()  # the claim's combined verdict is not any row's
    pairs = {r[1]: r[2] for r in rows}
    assert pairs["CARL: b vs a"] == "n = 3 pairs (seeds 0, 1, 2); unpaired: seed 3 (reference only)"


def test_the_interaction_rows_each_say_their_own_part():
    test = {"kind": "interaction", "small": ["s100", "s1000"], "large": ["l100", "l1000"]}
    cs = cells(cell("s100", BASE), cell("s1000", [77.0, 76.1, 77.4]), cell("l100", BASE),
               cell("l1000", [80.1, 78.9, 80.6]))
    out = cl.interaction(test, cs, "knn_top1", 0.5, (-3.5, -2.5))
    small, large, inter = (c.says for c in out.comparisons)
    assert small == "worse at the small setting, as the paper's" and inter == REPRODUCED
    assert "large setting" in large or large.startswith(UNDERPOWERED_HERE)


# -- seeds needed with their interval --------------------------------------------------------------------------
def test_an_underpowered_verdict_prints_the_seeds_needed_with_their_range():
    cs = cells(cell("a", BASE), cell("b", [80.5, 78.5, 80.9]))
    out = cl.gain(GAIN, cs, "knn_top1", 0.5, (-1.5, -0.5))
    assert re.fullmatch(rf"{UNDERPOWERED_HERE}: n = \d+ \(95% range \d+–(\d+|>1000)\) would decide ±0\.5",
                        out.verdict)
    lo, hi = re.search(r"range (\d+)–(\d+|>1000)", out.verdict).groups()
    assert int(lo) < (10**9 if hi.startswith(">") else int(hi))
    assert out.comparisons[0].says == out.verdict
    assert NOT_REPRODUCED not in out.verdict
