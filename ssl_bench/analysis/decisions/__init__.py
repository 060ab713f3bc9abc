"""Decisions over families of paired comparisons, and how strong each one is (issue 30, items 1, 3, 5 and 6). A
*comparison* is the per-seed paired differences ``method - reference`` of one metric (the same seed gives both
methods the same data order and crops); a *family* is the comparisons of one table on one protocol. Pure functions
on numbers: no records, no configuration, no files; the modules import numpy, scipy and each other, from the
bottom up. This file re-exports their public names.

    comparison  one comparison: pairing by seed (every n visible), its t-interval, t-test and TOST; α, power, confidence
    power       power of the t-test and of the TOST, MDE, and the seeds that decide a margin (with the pilot sd's range)
    family      one family-wise rule (RULE) deciding every comparison of a family; leave-one-seed-out fragility
    resampling  the test set's share of the noise: per-image pairing, the seed / test-set variance split, the bootstrap
"""

from ssl_bench.analysis.decisions.comparison import (
    ALPHA,
    CONFIDENCE,
    POWER,
    Pairing,
    interval,
    paired,
    t_test,
    tost,
)
from ssl_bench.analysis.decisions.family import (
    BETTER,
    EQUIVALENT,
    RULE,
    UNDERPOWERED,
    WORSE,
    Fragility,
    Verdict,
    decide_family,
    family_adjusted,
    fragile,
)
from ssl_bench.analysis.decisions.power import SeedsNeeded, mde, power_t, power_tost, sd_interval, seeds_needed
from ssl_bench.analysis.decisions.resampling import (
    Bootstrap,
    ImagePairing,
    bootstrap_difference,
    image_correctness,
    paired_images,
    variance_split,
)

__all__ = ["ALPHA", "BETTER", "CONFIDENCE", "EQUIVALENT", "POWER", "RULE", "UNDERPOWERED", "WORSE", "Bootstrap",
           "Fragility", "ImagePairing", "Pairing", "SeedsNeeded", "Verdict", "bootstrap_difference", "decide_family",
           "family_adjusted", "fragile", "image_correctness", "interval", "mde", "paired", "paired_images", "power_t",
           "power_tost", "sd_interval", "seeds_needed", "t_test", "tost", "variance_split"]
