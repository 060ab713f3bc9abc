"""The test set's share of the noise: the per-image correctness of a record's predictions
(:func:`image_correctness`), two sides paired image by image (:func:`paired_images`), the variance of a mean
difference split into its seed and test-set parts (:func:`variance_split`), and the interval over seeds and
test images (:func:`bootstrap_difference`, a :class:`Bootstrap`). Pure functions on numbers; imports numpy,
scipy and the shared settings and t-interval (ssl_bench.analysis.decisions.comparison)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from ssl_bench.analysis.decisions.comparison import CONFIDENCE, interval

# References (the [n] of the docstrings):
# [7] Owen, The pigeonhole bootstrap, Ann. Appl. Stat. 1:386-411, 2007 (bootstrap of a crossed design), and
#     Davison & Hinkley, Bootstrap Methods and their Application, 1997, section 3.8 (multi-level resampling).
# [8] Searle, Casella & McCulloch, Variance Components, 1992 (two-way crossed ANOVA estimators).

def image_correctness(predictions: Mapping[str, np.ndarray], protocol: str = "knn"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """From a record's predictions (:func:`ssl_bench.results.read_predictions`: ``index``, ``labels`` and one
    array per protocol, one row per evaluation seed): the test images' positions (ascending) and, per image, the
    share of evaluation rows that classify it right (``pred == label``; 0 or 1 with one row). Every row must hold
    the same images."""
    if protocol not in predictions:
        raise KeyError(f"no '{protocol}' predictions in this record (it has: {', '.join(sorted(predictions))})")
    index = np.atleast_2d(np.asarray(predictions["index"]))
    right = np.atleast_2d(np.asarray(predictions[protocol]) == np.asarray(predictions["labels"]))
    order = np.argsort(index, axis=1, kind="stable")
    index, right = np.take_along_axis(index, order, 1), np.take_along_axis(right, order, 1)
    if not (index == index[0]).all():
        raise ValueError("the evaluation rows hold different test images; compare one row at a time")
    return index[0].astype(np.int64), right.mean(axis=0)


@dataclass(frozen=True)
class ImagePairing:
    """Per shared seed, the per-image correctness of reference and method over the same test images (``index``),
    and the seeds that only one side has (or has without predictions)."""

    index: np.ndarray
    correct: dict[int, tuple[np.ndarray, np.ndarray]]
    only_reference: tuple[int, ...] = ()
    only_method: tuple[int, ...] = ()

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(self.correct))


def paired_images(reference: Mapping[int, Mapping[str, np.ndarray] | None],
                  method: Mapping[int, Mapping[str, np.ndarray] | None], protocol: str = "knn") -> ImagePairing:
    """Pair two sides' per-seed predictions (seed -> read_predictions dict, or None for a record without them)
    on their shared seeds, image by image. The bootstrap resamples one test set shared by all seeds and both
    sides, so every record must hold the same test images; a ValueError says which does not."""
    ref = {int(s): p for s, p in reference.items() if p is not None}
    met = {int(s): p for s, p in method.items() if p is not None}
    shared = sorted(set(ref) & set(met))
    index: np.ndarray | None = None
    correct = {}
    for s in shared:
        (i_r, c_r), (i_m, c_m) = image_correctness(ref[s], protocol), image_correctness(met[s], protocol)
        for side, i in (("reference", i_r), ("method", i_m)):
            if index is None:
                index = i
            if i.shape != index.shape or not (i == index).all():
                raise ValueError(f"seed {s} ({side}) holds other test images than seed {shared[0]}: the "
                                 "bootstrap needs one test set")
        correct[s] = (c_r, c_m)
    return ImagePairing(index if index is not None else np.zeros(0, np.int64), correct,
                        tuple(sorted(set(ref) - set(met))), tuple(sorted(set(met) - set(ref))))


def _mean_squares(d: np.ndarray) -> tuple[float, float]:
    """MS_image and MS_error of the two-way crossed layout ``d`` [S, N] (MS_error = 0 at S = 1)."""
    s, n = d.shape
    r, c, g = d.mean(axis=1), d.mean(axis=0), float(d.mean())
    ms_image = s * float(((c - g) ** 2).sum()) / (n - 1) if n > 1 else 0.0
    ms_error = float(((d - r[:, None] - c[None, :] + g) ** 2).sum()) / ((s - 1) * (n - 1)) if s > 1 and n > 1 else 0.0
    return ms_image, ms_error


def variance_split(d: np.ndarray) -> tuple[float, float]:
    """The variance of the mean difference split into its seed and test-set parts, from the per-seed, per-image
    differences ``d`` [S seeds, N images] (crossed: every seed sees the same test images), with the model
    ``d_si = g + a_s + b_i + e_si`` and the two-way ANOVA estimators [8] (r_s, c_i, g: seed, image, grand means):

        seed part = sum_s (r_s - g)^2 / ((S - 1) S)        estimates (var a + var e / N) / S: what the seed-only
                                                            t-interval covers (0 at S = 1)
        test part = max(0, MS_image - MS_error) / (S N)     estimates var b / N: the fixed test set's share, which
                                                            the seed-only interval misses
        MS_image = S sum_i (c_i - g)^2 / (N - 1),  MS_error = sum_si (d_si - r_s - c_i + g)^2 / ((S - 1)(N - 1))

    Their sum estimates the variance of the mean difference; the seed-by-image interaction e is counted once, in
    the seed part. At S = 1, MS_error = 0 and the test part is the per-image variance / N (McNemar's). In the units
    of ``d``, squared."""
    d = np.asarray(d, dtype=float)
    s, n = d.shape
    r = d.mean(axis=1)
    seed = float(((r - r.mean()) ** 2).sum() / (s - 1) / s) if s > 1 else 0.0
    ms_image, ms_error = _mean_squares(d)
    return seed, max(0.0, ms_image - ms_error) / (s * n)


@dataclass(frozen=True)
class Bootstrap:
    """A comparison's mean accuracy difference (points, method - reference) with the test set's noise in it.

    ``ci``: the interval to print beside ``seed_ci``, ``mean ± max(t_nu * sqrt(var_seed + var_test),
    t_{S-1} * sqrt(var_seed))`` with Welch-Satterthwaite's ``nu = (v_s + v_t)^2 / (v_s^2 / (S - 1) +
    v_t^2 / (N - 1))`` (Satterthwaite, Biometrics Bull. 2:110-114, 1946): it contains ``seed_ci``, equals it as
    the test part vanishes (many images) and covers 94-98% in a simulation of S = 2-8 seeds at any test share
    (Satterthwaite's df alone can make it narrower than ``seed_ci`` and cover 92.5% at S = 3); NaN at S = 1.
    ``ci_percentile``: the percentile interval of the hierarchical paired bootstrap over seeds and test images
    (:func:`bootstrap_difference`); with few seeds it is narrower than both (S - 1 df, few distinct resamples).
    ``seed_ci``: the seed-only t-interval of the per-seed differences (what tables show today);
    ``var_seed`` / ``var_test``: :func:`variance_split` (points^2), ``share_test`` the test set's share of their
    sum; ``n_seeds``, ``n_images``; ``resamples`` and ``rng_seed`` reproduce ``ci_percentile``."""

    mean: float
    ci: tuple[float, float]
    ci_percentile: tuple[float, float]
    seed_ci: tuple[float, float]
    var_seed: float
    var_test: float
    share_test: float
    n_seeds: int
    n_images: int
    resamples: int
    rng_seed: int


def _image_draws(effects: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Per resample, the mean of ``effects`` over N test images drawn with replacement, [B]. Images with the same
    effect are interchangeable, so the draw is a multinomial over the distinct values with their counts
    (``np.unique``; at most 2S + 1 values for right/wrong answers): the same distribution as drawing N indices."""
    values, counts = np.unique(effects, return_counts=True)
    drawn = rng.multinomial(effects.size, counts / counts.sum(), size=resamples)  # [B, K]
    return drawn @ values / effects.size


def _seed_and_test_interval(mean: float, v_seed: float, v_test: float, s: int, n: int, confidence: float
                            ) -> tuple[float, float]:
    """``Bootstrap.ci``: Satterthwaite's t-interval of the summed variance, never narrower than the seed-only one."""
    if s < 2:
        return math.nan, math.nan
    total = v_seed + v_test
    if total == 0:
        return mean, mean
    q = 0.5 + confidence / 2
    nu = total**2 / (v_seed**2 / (s - 1) + (v_test**2 / (n - 1) if n > 1 else 0.0))
    half = max(float(st.t.ppf(q, nu)) * math.sqrt(total), float(st.t.ppf(q, s - 1)) * math.sqrt(v_seed))
    return mean - half, mean + half


def bootstrap_difference(correct: Mapping[int, tuple[np.ndarray, np.ndarray]], resamples: int = 2000,
                         rng_seed: int = 0, confidence: float = CONFIDENCE) -> Bootstrap:
    """Interval of a comparison's mean accuracy difference over seeds and test images.

    ``correct``: per shared seed, (reference, method) correctness per test image (bool, or a share of evaluation
    rows), over the same N images for every seed (:func:`paired_images`); ``d_si = m_si - r_si`` and the estimate
    is ``100 * mean_si d_si``. Each resample [7] draws S seeds with replacement (their per-seed mean differences
    ``r_s``, paired) and one set of N test images with replacement, the same for every seed and both methods (the
    test set is one draw that every seed sees, so more seeds never average its noise away), and adds the drawn
    images' mean image effect ``lambda * (c_i - g)`` (c_i: image i's difference averaged over seeds):

        theta* = 100 * (mean_j r_{s*_j} + mean_j lambda (c_{i*_j} - g)),
        lambda = sqrt(max(0, 1 - MS_error / MS_image))

    Resampling raw cells at both levels would count the seed-by-image interaction e (already in every r_s) up to
    three times [7] (with the suite's 10,000 images and few seeds that is most of its variance); lambda shrinks
    the image effects to the image component alone, so the bootstrap variance matches :func:`variance_split`
    (variance-component rescaling, Carpenter, Goldstein & Rasbash, JRSS C 52:431-443, 2003). ``ci_percentile``
    is the percentile interval of ``theta*``; with few seeds it is too narrow (the seed stage has S - 1 df and few
    distinct resamples), so tables print ``ci`` (see :class:`Bootstrap`), the t-interval of the same two variance
    parts. Deterministic: ``np.random.default_rng(rng_seed)``.
    """
    seeds = sorted(correct)
    if not seeds:
        raise ValueError("no shared seeds to bootstrap")
    ref = np.stack([np.asarray(correct[s][0], dtype=float) for s in seeds])
    met = np.stack([np.asarray(correct[s][1], dtype=float) for s in seeds])
    if ref.shape != met.shape or ref.shape[1] == 0:
        raise ValueError(f"every seed needs both sides over the same test images (shapes {ref.shape}, {met.shape})")
    d = met - ref  # [S, N]
    s, n = d.shape
    ms_image, ms_error = _mean_squares(d)
    shrink = math.sqrt(max(0.0, 1 - ms_error / ms_image)) if ms_image > 0 else 0.0
    rng = np.random.default_rng(rng_seed)
    per_seed = d.mean(axis=1)
    seed_part = per_seed[rng.integers(0, s, size=(resamples, s))].mean(axis=1)
    image_part = _image_draws(shrink * (d.mean(axis=0) - d.mean()), resamples, rng)
    theta = 100 * (seed_part + image_part)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(theta, [tail, 1 - tail])
    mean = float(100 * d.mean())
    var_seed, var_test = (100**2 * v for v in variance_split(d))
    total = var_seed + var_test
    return Bootstrap(mean, _seed_and_test_interval(mean, var_seed, var_test, s, n, confidence), (float(lo), float(hi)),
                     interval((100 * per_seed).tolist(), confidence), var_seed, var_test,
                     var_test / total if total > 0 else math.nan, s, n, resamples, rng_seed)
