"""Is the run learning? Label-free health of the representation, an online linear probe and guardrails.

Measured after each epoch, never inside the training step, and without touching what training uses: the sample
and its two views are drawn once from their own generators (``data.subset_seed``), the model is only read (no
grad, eval-mode BN, each module's mode restored), the probe is fitted on detached features with its own
parameters and optimiser. A run with health on or off ends with bit-identical weights (tests/test_health.py).

- **Effective rank** (RankMe, Garrido et al. 2023): exp of the entropy of the normalised singular values of the
  features [N, D]; 1 = every image on one direction, min(N, D) = all directions used equally.
- **Alignment / uniformity** (Wang & Isola 2020) of the L2-normalised projections of two views x, x+:
  alignment = mean ||f(x) - f(x+)||^2 (0 = views agree), uniformity = log mean_{x != y} exp(-2 ||f(x) - f(y)||^2)
  (0 = all images on one point; about -4 for uniform features in high dimension).
- **std**: the mean per-dimension standard deviation of the normalised projections (0 = collapse; about 1/sqrt(D)
  when the features spread over the sphere).
- **Guardrails** (``train.guardrails=warn|stop|off``): one line naming the usual causes and the keys that control
  them when the loss sits at ln(K) (uniform codes), few prototypes are in use, the effective rank collapses, or
  nothing moves beyond its noise over the first epochs (not learning: ssl_bench/training/learning.py); each says
  what it measured and what healthy runs of the same budget show (ssl_bench/training/healthy_reference.json);
  a non-finite loss names the first tensor that went non-finite.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn
from torch.utils.data import default_collate

from ssl_bench.training.learning import not_learning, reference_text

# The per-epoch keys (metrics.jsonl); the record's summary keeps the last epoch's as final_<key>.
HEALTH_KEYS = ("health_rank_backbone", "health_rank_projection", "health_alignment", "health_uniformity", "health_std",
               "online_linear_top1")
# Health's views use their own crop seed, apart from every training seed (crops are seeded by (seed, epoch, index)).
HEALTH_SEED_OFFSET = 7_777_777


def effective_rank(x: Tensor) -> float:
    """RankMe: exp(entropy of the singular values of ``x`` [N, D], normalised to sum to 1)."""
    s = torch.linalg.svdvals(x.double())
    if s.sum() <= 0 or not torch.isfinite(s).all():
        return 0.0 if s.sum() <= 0 else float("nan")
    p = s / s.sum() + 1e-12
    return float(torch.exp(-(p * p.log()).sum()))


def alignment(a: Tensor, b: Tensor) -> float:
    """Mean squared distance between the normalised features of two views (rows paired)."""
    a, b = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    return float((a - b).pow(2).sum(1).mean())


def uniformity(a: Tensor, t: float = 2.0) -> float:
    """log mean over distinct pairs of exp(-t ||f(x) - f(y)||^2) of the normalised features."""
    a = F.normalize(a.double(), dim=1)
    return float(torch.pdist(a).pow(2).mul(-t).exp().mean().log())


def feature_std(a: Tensor) -> float:
    """Mean over dimensions of the standard deviation of the normalised features."""
    return float(F.normalize(a.double(), dim=1).std(0).mean())


def alignment_sem(a: Tensor, b: Tensor) -> float:
    """Standard error of :func:`alignment` over the rows (its noise as a mean over the sample)."""
    a, b = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    d = (a - b).pow(2).sum(1)
    return float(d.std() / math.sqrt(len(d))) if len(d) > 1 else 0.0


def health_stats(h1: Tensor, h2: Tensor, z1: Tensor, z2: Tensor) -> dict[str, float]:
    """The per-epoch health keys from backbone features h and projections z of two views of the same images, and the
    alignment's standard error (the noise the not_learning guardrail compares its change with)."""
    return {"health_rank_backbone": effective_rank(h1), "health_rank_projection": effective_rank(z1),
            "health_alignment": alignment(z1, z2), "health_alignment_sem": alignment_sem(z1, z2),
            "health_uniformity": uniformity(z1), "health_std": feature_std(z1)}


def linear_probe_top1(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int, steps: int,
                      lr: float) -> float:
    """Top-1 (%) of a linear classifier fitted on detached features ``train`` = (x [N, D], labels [N]) by full-batch
    SGD from zero (standardised with the train statistics; no random number is drawn), tested on ``test``."""
    x, y = train[0].detach().float(), train[1].long()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr, momentum=0.9)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(x @ w + b, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = (((test[0].detach().float() - mean) / std) @ w + b).argmax(1)
    return float((pred == test[1].long()).float().mean() * 100)


@contextmanager
def reading(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad while the model is measured; every module's own mode comes back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


class HealthSample:
    """A fixed sample of the pretraining images (``data.subset_seed``) and two augmented views of each, made once by
    the run's own multi-crop backend with a seed of their own (the same views every epoch, for every method)."""

    def __init__(self, cfg: DictConfig, base: Any, device: torch.device, n: int) -> None:
        g = torch.Generator().manual_seed(int(cfg.data.subset_seed))
        self.indices = torch.randperm(len(base), generator=g)[: min(n, len(base))].sort().values.tolist()
        view_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(view_cfg):
            view_cfg.seed = int(cfg.data.subset_seed) + HEALTH_SEED_OFFSET
            view_cfg.crops["global"].n = 2
            view_cfg.crops["local"].n = 0
        from ssl_bench.training.multicrop import build_pretrain_set

        _, views, augment = build_pretrain_set(view_cfg, base, device)
        # The PIL backend seeds numpy's and Python's generators per image: give the run back its own states.
        np_state, py_state, torch_state = np.random.get_state(), random.getstate(), torch.random.get_rng_state()
        v1, v2 = [], []
        try:
            for start in range(0, len(self.indices), 256):
                batch = default_collate([views[i] for i in self.indices[start : start + 256]])
                if augment is not None:
                    batch = augment({k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()})
                v1.append(batch["crops"][0].cpu())
                v2.append(batch["crops"][1].cpu())
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
            torch.random.set_rng_state(torch_state)
        self.views = (torch.cat(v1), torch.cat(v2))

    def measure(self, model: nn.Module, accelerator: Any, batch_size: int = 256) -> dict[str, float]:
        """Health of ``model`` (an SSLModel: backbone and head) on the sample's two views."""
        out: list[list[Tensor]] = [[], [], [], []]
        with reading(model):
            for start in range(0, len(self.indices), batch_size):
                for v, view in enumerate(self.views):
                    x = view[start : start + batch_size].to(accelerator.device)
                    with accelerator.autocast():
                        h = model.backbone(x)
                        z = model.head(h)
                    out[v].append(h.float().cpu())
                    out[2 + v].append(z.float().cpu())
        h1, h2, z1, z2 = (torch.cat(o) for o in out)
        return health_stats(h1, h2, z1, z2)


# -- guardrails -----------------------------------------------------------------------------------------------------
# The usual causes of each failure and the keys that control them; a run names those its method has.
_UNIFORM_CAUSES = (("method.queue_start_epoch", "a queue started too early"),
                   ("method.freeze_prototypes_iters", "prototypes not frozen long enough at the start"),
                   ("optim.lr", "a learning rate too high"), ("method.temperature", "a temperature too high"),
                   ("method.epsilon", "a Sinkhorn epsilon too large"),
                   ("method.lambda_start", "no equipartition term (CARL's KL weight at 0)"))
_FEW_PROTOTYPES_CAUSES = (("method.lambda_start", "no equipartition term (CARL's KL weight at 0)"),
                          ("method.epsilon", "a Sinkhorn epsilon too large"), ("optim.lr", "a learning rate too high"),
                          ("method.num_prototypes", "more prototypes than the data supports"))
_LOW_RANK_CAUSES = (("optim.lr", "a learning rate too high"), ("method.temperature", "a temperature too low/high"),
                    ("method.lambda_start", "no equipartition term"), ("method.epsilon", "Sinkhorn's epsilon"))


def _causes(cfg: DictConfig | None, causes: tuple[tuple[str, str], ...]) -> str:
    parts = []
    for key, why in causes:
        if cfg is None or OmegaConf.select(cfg, key, default=None) is not None:
            value = "" if cfg is None else f"={OmegaConf.select(cfg, key)}"
            parts.append(f"{why} ({key}{value})")
    return "; ".join(parts)


def uniform_codes(losses: list[float], k: int, tolerance: float = 0.01, epochs: int = 2) -> str | None:
    """A message when each of the last ``epochs`` losses is within ``tolerance`` (relative) of ln(k)."""
    if k < 2 or len(losses) < epochs:
        return None
    ln_k = math.log(k)
    last = losses[-epochs:]
    if all(math.isfinite(v) and abs(v - ln_k) <= tolerance * ln_k for v in last):
        return (f"loss {last[-1]:.4f} within {tolerance:.0%} of ln(K) = {ln_k:.4f} (K={k}) for {epochs} epochs: the "
                "codes are uniform, the prototypes tell the images apart no better than chance")
    return None


def few_prototypes(used: int, k: int, fraction: float) -> str | None:
    """A message when fewer than ``fraction`` of the ``k`` prototypes received an image this epoch."""
    if k < 2 or used >= fraction * k:
        return None
    return f"only {used} of {k} prototypes in use (< {fraction:.0%}): the assignments are collapsing"


def low_rank(rank: float, floor: float, what: str = "backbone features", dims: int | None = None) -> str | None:
    """A message when the effective rank of ``what`` is below ``floor`` (of at most ``dims``, when given)."""
    if not math.isfinite(rank) or rank >= floor:
        return None
    of = f" (of at most {dims})" if dims else ""
    return (f"effective rank of the {what} {rank:.2f} < {floor:.3g}{of}: the representation collapses onto few "
            "directions")


def check_guardrails(rows: list[dict], cfg: DictConfig) -> list[dict[str, str]]:
    """The guardrails that fire at the last of ``rows`` (the per-epoch records so far), each once per run (one that
    fired at an earlier row stays quiet): [{"check": name, "message": text with causes and keys}]."""
    h = cfg.health
    row = rows[-1]
    fired = {g["check"] for r in rows[:-1] for g in r.get("guardrails", [])}
    k = OmegaConf.select(cfg, "method.num_prototypes", default=None)
    k = int(k) if isinstance(k, int) else 0  # a list (several heads) or none: ln(K) is not the loss of uniform codes
    found = []
    msg = uniform_codes([float(r["loss"]) for r in rows], k, h.uniform_tolerance, h.uniform_epochs)
    if msg:
        found.append(("uniform_codes", msg + reference_text(cfg, "loss_from_ln_k", "{:.1%} from ln(K)"),
                      _UNIFORM_CAUSES))
    if "prototypes_used" in row:
        total = int(OmegaConf.select(cfg, "method.num_prototypes", default=0) if k else 0) or k
        msg = few_prototypes(int(row["prototypes_used"]), total, h.min_prototypes_fraction) if total else None
        if msg:
            found.append(("few_prototypes", msg + reference_text(cfg, "prototypes_used_fraction", "{:.0%} in use"),
                          _FEW_PROTOTYPES_CAUSES))
    # The projections collapse first (the objective acts on them); either one is reported, the projections first.
    # Their floor is also relative to the rank they could reach: a collapse onto a few directions of many.
    dims = min(int(h.samples), int(OmegaConf.select(cfg, "head.out_dim", default=0) or 0))
    floors = {"projections": max(h.min_rank, h.min_rank_fraction * dims), "backbone features": h.min_rank}
    msg = next((m for key, what in (("health_rank_projection", "projections"),
                                    ("health_rank_backbone", "backbone features"))
                if key in row and (m := low_rank(float(row[key]), floors[what], what, dims if what == "projections"
                                                 else None))), None)
    if msg:
        what = "projection" if msg.startswith("effective rank of the projections") else "backbone"
        found.append(("low_rank", msg + reference_text(cfg, f"rank_{what}", "{:.3g}"), _LOW_RANK_CAUSES))
    out = [{"check": name, "message": f"{text}. Usual causes: {_causes(cfg, causes)}"}
           for name, text, causes in found if name not in fired]
    # not_learning stays quiet once another guardrail fired (this epoch or before): that one names the failure.
    if not fired and not out and (msg := not_learning(rows, cfg)):
        out.append({"check": "not_learning", "message": msg})
    return out


class NonFiniteWatch:
    """Keeps a reference to the last step's backbone, head and method sub-module outputs (forward hooks: no
    computation, no sync), so that a non-finite loss can name the first tensor that went non-finite."""

    def __init__(self, model: nn.Module) -> None:
        self.outputs: dict[str, list[Tensor]] = {}
        self.handles = []
        parts = [("backbone", "the backbone features"), ("head", "the projections (head output)")]
        method = getattr(model, "method", None)
        if method is not None:
            parts += [(f"method.{name}", f"the output of method.{name} (e.g. the prototype scores Sinkhorn reads)")
                      for name, _ in method.named_children()]
        self.names = dict(parts)
        for name in self.names:
            module = model.get_submodule(name)
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                self.outputs.setdefault(name, []).append(output.detach())
        return hook

    def clear(self) -> None:
        self.outputs.clear()

    def culprit(self, batch: dict | None) -> str:
        """The first non-finite tensor of the last step, in forward order: the input crops, then the outputs."""
        crops = (batch or {}).get("crops") or []
        if any(isinstance(c, Tensor) and c.is_floating_point() and not torch.isfinite(c).all() for c in crops):
            return "the input crops (the data or the augmentation)"
        for name, text in self.names.items():
            if any(not torch.isfinite(t.float()).all() for t in self.outputs.get(name, [])):
                return text
        return ("the objective itself, from finite features and scores (e.g. the Sinkhorn codes overflowing in low "
                "precision: method.epsilon, train.precision; or log(0))")

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
