"""results/claims.md: the verdict rules on hand-made records, and the shipped report equal to the regenerated one."""

import pytest

from ssl_bench.analysis import claims as cl
from ssl_bench.analysis.claims import DIRECTION, NOT_REPRODUCED, NOT_RUN, REPRODUCED, UNDERPOWERED_HERE, Cell
from ssl_bench.errors import ConfigError


def cell(variant: str, knn: list[float], method: str = "swav", entropy: list[float] | None = None) -> Cell:
    c = Cell(variant, method, list(range(len(knn))))
    for s, v in enumerate(knn):
        c.summaries[s] = {"metrics": {"knn_top1": v}}
        c.epochs[s] = [{"epoch": 0, "assign_entropy": 0.9}, {"epoch": 1, "assign_entropy": (entropy or [0.9] * 9)[s]}]
    return c


def cells(*cs: Cell) -> dict:
    return {(c.variant, c.method): c for c in cs}


GAIN = {"kind": "gain", "baseline": "a", "variants": ["b"], "expect": "lower"}
PAPER = (-1.5, -0.5)  # the paper's effect (points, b - a) the constructed gains are read against


@pytest.mark.parametrize(("b", "want"), [
    ([79.0, 78.1, 79.4], REPRODUCED),        # lower by 1.0, 0.9, 1.1: significant, as expected
    ([81.0, 80.1, 81.4], f"{NOT_REPRODUCED} (the other way)"),  # higher by the same: significant the other way
    ([80.5, 78.5, 80.9], f"{UNDERPOWERED_HERE}: n = "),  # +0.5, -0.5, +0.4: neither a difference nor within +-0.5
    ([80.1, 79.0, 80.6], f"{NOT_REPRODUCED} (equivalent"),  # +0.1, 0, +0.1: inside +-0.5, an effect that size is out
    ([79.0], NOT_RUN),                       # one seed: no test
])
def test_gain_verdicts(b, want):
    out = cl.gain(GAIN, cells(cell("a", [80.0, 79.0, 80.5]), cell("b", b)), "knn_top1", 0.5, PAPER)
    assert out.verdict.startswith(want)


def test_gain_over_several_methods_needs_all():
    cs = cells(cell("a", [80.0, 79.0, 80.5]), cell("b", [79.0, 78.1, 79.4]),
               cell("a", [80.0, 79.0, 80.5], "carl"), cell("b", [80.5, 78.5, 80.9], "carl"))
    out = cl.gain(GAIN, cs, "knn_top1", 0.5, PAPER)
    assert out.verdict == f"1 of 2 {REPRODUCED}, 1 of 2 {UNDERPOWERED_HERE}"
    assert out.comparisons[0].says == REPRODUCED and out.comparisons[1].says.startswith(UNDERPOWERED_HERE)


def test_the_family_correction_can_remove_significance():
    # Alone, p ~ 0.04; with a second comparison of p ~ 0.9 in the family, the family-wise rule doubles it past 0.05.
    a, b = [80.0, 79.0, 80.5], [79.2, 78.5, 79.4]  # -0.8, -0.5, -1.1: t = -4.6, p = 0.044
    alone = cl.gain(GAIN, cells(cell("a", a), cell("b", b)), "knn_top1", 0.5, PAPER)
    assert alone.verdict == REPRODUCED
    two = {**GAIN, "variants": ["b", "c"]}
    both = cl.gain(two, cells(cell("a", a), cell("b", b), cell("c", [80.1, 78.8, 80.6])), "knn_top1", 0.5, PAPER)
    assert both.comparisons[0].says.startswith(UNDERPOWERED_HERE)


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    test = {"kind": "equivalent", "baseline": "a", "variants": ["b"], "margin": 1.0}
    near = cl.equivalent(test, cells(cell("a", [80.0, 79.0, 80.5]), cell("b", [80.1, 79.1, 80.5])), "knn_top1", 0.5)
    assert near.verdict == REPRODUCED  # the test's own margin (1.0) wins over the file's
    wide = cl.equivalent(test, cells(cell("a", [80.0, 79.0, 80.5]), cell("b", [80.9, 78.2, 80.6])), "knn_top1", 0.5)
    assert wide.verdict.startswith(UNDERPOWERED_HERE)  # mean difference 0.07 but an interval far beyond +-1
    far = cl.equivalent(test, cells(cell("a", [80.0, 79.0, 80.5]), cell("b", [78.0, 77.1, 78.4])), "knn_top1", 0.5)
    assert far.verdict == f"{NOT_REPRODUCED} (worse by -2.0)"


def test_collapse_verdicts():
    test = {"kind": "collapse", "baseline": "a", "variants": ["b"]}
    ok = cell("a", [80, 80, 80], entropy=[0.8, 0.8, 0.9])
    assert cl.collapse(test, cells(ok, cell("b", [70] * 3, entropy=[0.0, 0.05, 0.01])), 0.1).verdict == REPRODUCED
    assert cl.collapse(test, cells(ok, cell("b", [80] * 3, entropy=[0.7, 0.8, 0.9])), 0.1).verdict == NOT_REPRODUCED
    some = cl.collapse(test, cells(ok, cell("b", [80] * 3, entropy=[0.0, 0.8, 0.9])), 0.1).verdict
    assert some == f"{UNDERPOWERED_HERE} (collapsed in 1 of 3)"
    both = cells(cell("a", [80] * 3, entropy=[0.0, 0.0, 0.0]), cell("b", [70] * 3, entropy=[0.0, 0.0, 0.0]))
    assert cl.collapse(test, both, 0.1).verdict == f"{NOT_REPRODUCED} (the baseline collapsed too)"


def test_inverse_u_verdicts():
    test = {"kind": "inverse_u", "variants": ["k10", "k100", "k1000"]}
    u = cells(cell("k10", [78.0, 77.2, 78.5]), cell("k100", [80.0, 79.1, 80.4]), cell("k1000", [78.1, 77.0, 78.3]))
    assert cl.inverse_u(test, u, "knn_top1", 0.5, (1.0, 3.0)).verdict == REPRODUCED
    assert cl.inverse_u(test, u, "knn_top1", 0.5).verdict.startswith(DIRECTION)  # no number from the paper
    rising = cells(cell("k10", [76.0, 75.2, 76.5]), cell("k100", [78.0, 77.1, 78.4]),
                   cell("k1000", [80.1, 79.0, 80.3]))
    assert cl.inverse_u(test, rising, "knn_top1", 0.5).verdict == f"{NOT_REPRODUCED} (best at an end)"
    flat = cells(cell("k10", [80.0, 79.2, 80.5]), cell("k100", [80.2, 79.0, 80.4]), cell("k1000", [79.9, 79.3, 80.3]))
    # Best at the k10 end, equivalent within +-0.5 to the best inner one (k100 - k10: +0.2, -0.2, -0.1).
    assert cl.inverse_u(test, flat, "knn_top1", 0.5).verdict == f"{NOT_REPRODUCED} (flat within ±0.5)"
    partial = cl.inverse_u(test, cells(cell("k10", [78.0, 77.2]), cell("k100", [80.0]), cell("k1000", [])),
                           "knn_top1", 0.5)
    assert partial.verdict == NOT_RUN
    assert [r[-1] for r in partial.rows] == ["72.5–82.7", "—", "—"]  # t(1): 77.6 +- 12.71 x 0.4; none from one seed


def test_interaction_verdicts():
    test = {"kind": "interaction", "small": ["s100", "s1000"], "large": ["l100", "l1000"]}
    base = [80.0, 79.0, 80.5]
    degrade = cells(cell("s100", base), cell("s1000", [77.0, 76.1, 77.4]),
                    cell("l100", base), cell("l1000", [80.1, 78.9, 80.6]))
    assert cl.interaction(test, degrade, "knn_top1", 0.5, (-3.5, -2.5)).verdict == REPRODUCED
    improve = cells(cell("s100", base), cell("s1000", [81.0, 80.1, 81.4]),
                    cell("l100", base), cell("l1000", [80.1, 78.9, 80.6]))
    assert cl.interaction(test, improve, "knn_top1", 0.5).verdict == f"{NOT_REPRODUCED} (better at the small setting)"


def test_unknown_variant_in_claims_file_is_a_one_line_error():
    with pytest.raises(ConfigError, match="valid: a, b"):
        cl.gain({**GAIN, "variants": ["typo"]}, cells(cell("a", [1, 2]), cell("b", [1, 2])), "knn_top1", 0.5)


# The shipped report equals the regenerated one: tests/test_results_trust.py (reference.check covers claims.md).


def test_a_claim_with_some_comparisons_not_run_reports_the_ones_that_ran():
    test = {"kind": "gain", "expect": "lower", "pairs": [["a", "b"], ["c", "d"]]}
    cs = cells(cell("a", [80.0, 79.0, 80.5]), cell("b", [79.0, 78.1, 79.4]), cell("c", [80.0]), cell("d", []))
    out = cl.gain(test, cs, "knn_top1", 0.5, PAPER)
    assert out.verdict == f"{REPRODUCED} on 1 of 2 comparisons"
    assert [c.says for c in out.comparisons] == [REPRODUCED, NOT_RUN]


def test_a_claim_figure_does_not_depend_on_what_the_process_drew_before(tmp_path):
    """ssl_bench.claims alone and ssl_bench.reference (which draws the other figures first, setting seaborn's
    theme) must write the same bytes; the claims figures used to come out without the grid when drawn alone."""
    import matplotlib as mpl
    import seaborn as sns

    claim = {"id": 1, "test": GAIN}
    cs = cells(cell("a", [80.0, 79.0, 80.5]), cell("b", [79.0, 78.1, 79.4]))
    ev = cl.Evaluated(claim, cs, [0, 1, 2], "", "knn_top1", {"knn_top1": cl.gain(GAIN, cs, "knn_top1", 0.5)})
    mpl.rcdefaults()
    alone = cl.claim_figure(ev, tmp_path / "alone").read_bytes()
    sns.set_theme(style="dark", context="poster")
    try:
        after = cl.claim_figure(ev, tmp_path / "after").read_bytes()
    finally:
        mpl.rcdefaults()
    assert alone == after
