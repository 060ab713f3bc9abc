"""Is the run moving at all? The ``not_learning`` guardrail, and what healthy runs of a budget show.

A run whose learning rate is far too small, whose warm-up is longer than the run, whose parameters are frozen or
whose softmax saturates trains without error and ends with a kNN score: nothing in the loss's value, the prototypes
or the rank says it never learned. What says it is that none of its learning signals moves more than its own
measurement noise over the first ``health.flat_epochs`` epochs (the window, judged once at its last epoch: later
epochs of a healthy cosine schedule flatten out by design). Each signal's noise is measured by the run itself:

- **the loss** (lower is better): each epoch's mean loss has a standard error, ``loss_sem`` in the row (the
  step-to-step noise of the epoch's losses from their successive differences, blind to the loss's trend within the
  epoch, over sqrt(steps); recorded by the loop). ``sem`` below is the root mean square of the window's standard
  errors, and the loss's *fall* is the first epoch's loss minus the lowest later one. A row without ``loss_sem``
  (recorded before it existed) has no known noise (0; the catalogue's replay of such records gives them the seed
  spread of the loss instead, see ``benchmarks/guardrail_catalogue.py``);
- **the alignment** of two views (lower is better): its noise is ``health_alignment_sem``, the standard error of the
  mean over the health sample (``health.samples`` images);
- **the online probe** and **the monitor kNN** (higher is better): binomial noise of a top-1 on
  ``eval.monitor_test_subset`` test images, 100 * sqrt(p (1 - p) / n).

The loss *did not fall*:

- where the budget has healthy records (:func:`healthy_reference`, written from the shipped records and the
  catalogue's healthy controls), when even an upper bound on its fall, ``fall + z * sqrt(2) * sem``
  (``z = health.flat_z``), is below ``health.flat_fraction`` of the smallest fall any healthy run of the budget
  shows over the window (an equivalence decision: confidently far from a healthy run, not merely "no significant
  fall"). A short budget measures the loss too noisily to tell a healthy fall from none (4 steps an epoch at the
  smoke budget): the bound is then large and the guardrail keeps quiet rather than guess;
- elsewhere, when the fall is within ``z * sqrt(2) * sem`` (no fall beyond the noise of a difference of two epoch
  means). A loss that rises counts as not falling (DeepCluster-v2's loss rises with still weights: its targets are
  recomputed from features whose BN statistics settle).

The guardrail fires when the loss did not fall *and* no representation signal the row has improved by more than
``z * sqrt(2)`` times its noise on a later epoch of the window compared with the first (a signal that got worse is
not learning either: at a short budget the BN running statistics move the eval-mode alignment while the weights
stand still). Every decision compares a change with the signal's own noise, never a fixed change.

The causes are ranked by what the signals point to: a warm-up longer than the run first when it is; frozen
prototypes when they were frozen for the whole window; the learning rate and its schedule first when the weights
stood still (``weight_drift``, the relative L2 distance of the trainable parameters from their initial values,
below :data:`STILL`; without it, when the representation stood still), a saturating temperature or head first
when the weights moved but the loss did not (the objective gives no signal). The ranking only orders the causes; it
never decides whether the guardrail fires.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

# (row key, noise key or None, +1 when higher is better, words) of the representation signals.
_SIGNALS = (("health_alignment", "health_alignment_sem", -1, "alignment"),
            ("online_linear_top1", None, 1, "online probe top-1"),
            ("monitor_knn_top1", None, 1, "monitor kNN top-1"))


def healthy_reference(budget: str | None) -> dict[str, Any]:
    """What healthy runs of ``budget`` show ({} when none is recorded): the per-budget ranges that
    ``python -m benchmarks.guardrail_catalogue`` writes from the shipped records and its healthy controls."""
    try:
        data = json.loads(resources.files("ssl_bench.training").joinpath("healthy_reference.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data.get(str(budget), {}) if budget else {}


def reference_text(cfg: DictConfig, key: str, fmt: str) -> str:
    """`` (healthy <budget> runs: <range>, <n> records)`` for ``key`` of the reference, or a statement that none is
    recorded for this budget. ``fmt`` formats one value."""
    budget = OmegaConf.select(cfg, "choices.budget", default=None)
    ref = healthy_reference(budget)
    entry = ref.get(key)
    if not entry:
        return f" (no healthy {budget or 'same-budget'} reference recorded for this check)"
    lo, hi, n = entry["min"], entry["max"], entry["n"]
    return f" (healthy {budget} runs: {fmt.format(lo)} to {fmt.format(hi)} over {n} records)"


def fell(values: list[float], noise: float, z: float) -> bool:
    """True when the first of ``values`` minus the lowest later one exceeds ``z`` standard errors (``noise``, each
    value's) of a difference of two of them: a fall beyond the noise."""
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return True  # nothing to judge (a non-finite loss stops the run on its own)
    return values[0] - min(values[1:]) > z * math.sqrt(2) * noise


def improved(values: list[float], noises: list[float], z: float, sign: int) -> bool:
    """True when a later value is better than the first (``sign`` +1: higher is better) by more than ``z`` standard
    errors of a difference."""
    if len(values) < 2:
        return False
    noise = _pooled(noises)
    return any(sign * (v - values[0]) > z * math.sqrt(2) * noise for v in values[1:] if math.isfinite(v))


def _pooled(noises: list[float]) -> float:
    """The window's noise: the root mean square of its values' standard errors (0 without any)."""
    return math.sqrt(sum(x * x for x in noises) / len(noises)) if noises else 0.0


def _moved(values: list[float], noises: list[float], z: float) -> bool:
    return any(abs(v - values[0]) > z * math.sqrt(2) * _pooled(noises) for v in values[1:])


def binomial_sem(top1: float, n: int) -> float:
    """Standard error (in points) of a top-1 (%) measured on ``n`` images."""
    p = min(max(top1 / 100, 0.0), 1.0)
    return 100 * math.sqrt(max(p * (1 - p), 1.0 / max(n, 1)) / max(n, 1))


# Ranking only (never firing): weights that moved less than this from their initial values (relative L2) stood still.
STILL = 1e-4


def _causes(cfg: DictConfig, rows: list[dict], representation_moved: bool) -> tuple[list[str], str]:
    """The causes of a run that does not move, most likely first, and what the ranking read (module docstring)."""
    sel = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    lr_max = max(float(r.get("lr", 0.0)) for r in rows)
    changes = [float(r["weight_drift"]) for r in rows if r.get("weight_drift") is not None]
    still = max(changes) < STILL if changes else not representation_moved
    read = (f"the weights moved {max(changes):.2g} (relative L2) from their initial values" if changes else
            "the representation " + ("moved" if representation_moved else "stood still"))
    scored: list[tuple[float, str]] = []
    warmup, epochs = sel("optim.warmup_epochs"), sel("train.epochs")
    if warmup is not None and epochs is not None and warmup >= epochs:
        scored.append((3, f"a warm-up longer than the run (optim.warmup_epochs={warmup}, train.epochs={epochs})"))
    freeze = sel("method.freeze_prototypes_iters")
    if freeze is not None and freeze >= int(rows[-1].get("step", 0)):
        scored.append((2, f"prototypes frozen for the whole window (method.freeze_prototypes_iters={freeze})"))
    if sel("method.fixed_prototypes"):
        scored.append((1.5, "fixed prototypes (method.fixed_prototypes=True)"))
    scored.append((2.5 if still else 1, f"a learning rate or schedule that does not move the weights usefully (too "
                                        f"small: they stand still; too large: they move, the loss does not fall) "
                                        f"(optim.lr={sel('optim.lr'):g}, optim.final_lr={sel('optim.final_lr'):g}, "
                                        f"optim.warmup_epochs={warmup}; the largest lr used so far {lr_max:.3g})"))
    if sel("method.temperature") is not None:
        scored.append((0.5 if still else 2, "a temperature that saturates the softmax (too high: uniform scores, too "
                       f"low: one-hot; method.temperature={sel('method.temperature')})"))
    scored.append((0.4 if still else 1.5, f"a head that saturates (head.hidden_dim={sel('head.hidden_dim')}, "
                                          f"head.out_dim={sel('head.out_dim')})"))
    if sel("optim.weight_decay") is not None:
        scored.append((0.3, f"weight decay that pins the weights (optim.weight_decay={sel('optim.weight_decay')})"))
    return [text for _, text in sorted(scored, key=lambda s: -s[0])], read


def not_learning(rows: list[dict], cfg: DictConfig) -> str | None:
    """The not_learning message at the last of ``rows`` when it is the window's last epoch and nothing moved (see the
    module's docstring), else None."""
    h = cfg.health
    window, z = int(h.flat_epochs), float(h.flat_z)
    if window < 2 or len(rows) != window:
        return None
    losses = [float(r["loss"]) for r in rows]
    sems = [float(r["loss_sem"]) for r in rows if r.get("loss_sem") is not None]
    noise = _pooled(sems) if len(sems) == len(rows) else 0.0
    if not all(math.isfinite(v) for v in losses):
        return None
    budget = OmegaConf.select(cfg, "choices.budget", default=None)
    healthy = healthy_reference(budget).get(f"loss_fall_{window}")
    fall, margin = losses[0] - min(losses[1:]), z * math.sqrt(2) * noise
    if healthy and healthy["min"] > 0 and losses[0]:
        bound = (fall + margin) / abs(losses[0])
        if bound >= float(h.flat_fraction) * healthy["min"]:
            return None
        decided = (f"its fall is at most {bound:.2%} of the first epoch's loss (fall {fall:+.4f} plus {z:g} x sqrt(2) "
                   f"x standard error {noise:.2g}), below {float(h.flat_fraction):g} of the smallest fall healthy "
                   f"{budget} runs show over {window} epochs ({healthy['min']:.1%}; they fall {healthy['min']:.1%} to "
                   f"{healthy['max']:.1%} over {healthy['n']} records)")
    else:
        if fell(losses, noise, z):
            return None
        decided = (f"its fall {fall:+.4f} is within {z:g} x sqrt(2) x standard error {noise:.2g} = {margin:.2g} "
                   f"(no healthy reference recorded for the {budget} budget)")
    n_test = int(OmegaConf.select(cfg, "eval.monitor_test_subset", default=0) or 0)
    measured, moved = [], False
    for key, noise_key, sign, words in _SIGNALS:
        if not all(key in r for r in rows):
            continue
        values = [float(r[key]) for r in rows]
        noises = ([float(r.get(noise_key, 0.0)) for r in rows] if noise_key
                  else [binomial_sem(v, n_test) for v in values])
        if improved(values, noises, z, sign):
            return None
        moved = moved or _moved(values, noises, z)
        measured.append(f"{words} {values[0]:.3g} -> {values[-1]:.3g} (noise {_pooled(noises):.2g})")
    causes, read = _causes(cfg, rows, moved)
    text = (f"the loss did not fall over the first {window} epochs: {', '.join(f'{v:.4f}' for v in losses)}; "
            + decided)
    if measured:
        text += "; " + "; ".join(measured) + ", none improved beyond its noise"
    text += (f": the run is not learning. {read[0].upper() + read[1:]}; likely causes, most likely first: "
             + "; ".join(causes))
    return text
