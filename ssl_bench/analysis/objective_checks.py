"""The checks of ``check-method`` (ssl_bench.analysis.conformance) that need no training loop: the objective's
config (bad values refused in one line), its loss on random crops of every crop count, its gradient reaching the
backbone, and the same numbers from the same seed. Each check returns its table detail or raises :class:`CheckFailed`.
Imports configuration, the method interface and the pipeline's model builder, never the loop."""

from __future__ import annotations

import dataclasses
from typing import Any

from ssl_bench.errors import ConfigError

# Crop counts (global, local) the objective must take. Global crops are at least 2: the loop's shared default.
CROP_COUNTS = ((2, 0), (2, 2), (2, 6))


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


class CheckFailed(Exception):
    """A check's finding (its message is the table's detail)."""


# -- config ------------------------------------------------------------------------------------------------------
def _refused_in_one_line(overrides: list[str]) -> str | None:
    """None if the config composes; 'refused' if it is refused with a one-line ConfigError; else CheckFailed."""
    from ssl_bench.config.compose import compose

    try:
        compose(overrides)
    except ConfigError as exc:
        text = str(exc).strip()
        if not text or "\n" in text:
            raise CheckFailed(f"{overrides[-1]}: the error is not one line: {text[:120]!r}") from exc
        return "refused"
    except Exception as exc:
        raise CheckFailed(f"{overrides[-1]}: {one_line(exc)} instead of a one-line config error") from exc
    return None


def _bad_values(config: type) -> list[tuple[str, str, bool]]:
    """(key, value, must be refused): a negative value of every numeric field (the objective's own checks: refused or
    accepted, but never anything but a one-line error), and one value of the wrong type per kind of field (the
    schema's typing, the same for every field of a kind)."""
    out, kinds = [], set()
    wrong = {"int": "not_a_number", "float": "not_a_number", "bool": "not_a_bool", "str": "[1,2]"}
    for f in dataclasses.fields(config):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if f.name == "name" or kind not in wrong:
            continue
        if kind in ("int", "float"):
            out.append((f.name, "-1", False))
        if kind not in kinds:
            kinds.add(kind)
            out.append((f.name, wrong[kind], True))
    return out


def check_config(name: str) -> str:
    from ssl_bench.config.compose import compose
    from ssl_bench.config.registry import registry

    base = ["budget=smoke", f"method={name}"]
    compose(base)  # the defaults compose (an error here is the finding)
    refused, accepted = 0, 0
    for key, value, must in [("no_such_key", "1", True), *_bad_values(registry()[name].config)]:
        verdict = _refused_in_one_line([*base, f"method.{key}={value}"])
        if must and verdict is None:
            raise CheckFailed(f"method.{key}={value} was accepted")
        refused += verdict is not None
        accepted += verdict is None
    one_crop = _refused_in_one_line([*base, "crops.global.n=1", "crops.local.n=0"])
    return (f"{refused} bad values refused in one line, {accepted} accepted; one crop "
            f"{'refused' if one_crop else 'accepted'}")


# -- the objective on random crops -------------------------------------------------------------------------------
def _random_step(name: str, n_global: int, n_local: int, seed: int = 0) -> tuple[Any, Any]:
    """One training step's loss and backward on random crops (the loop's hook order); returns (loss, model)."""
    import torch

    from ssl_bench.config.compose import compose
    from ssl_bench.methods.base import Context
    from ssl_bench.pipeline.experiment import build_model

    cfg = compose(["budget=smoke", f"method={name}", f"crops.global.n={n_global}", f"crops.local.n={n_local}"])
    torch.manual_seed(seed)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    b, n = int(cfg.data.batch_size), 64  # the batch and the "dataset" for a method that needs a pass over it
    size_g, size_l = int(cfg.crops["global"].size), int(cfg.crops["local"].size)
    images = torch.randn(n, 3, size_g, size_g, generator=g)

    def embed_dataset() -> tuple[Any, Any]:
        with torch.no_grad():
            return torch.arange(n), model.project([images])[0]

    ctx = Context(epoch=0, step=0, epochs=2, steps_per_epoch=4, embed_dataset=embed_dataset, dataset_size=n)
    crops = ([torch.randn(b, 3, size_g, size_g, generator=g) for _ in range(n_global)]
             + [torch.randn(b, 3, size_l, size_l, generator=g) for _ in range(n_local)])
    model.method.on_train_start(ctx)
    model.method.on_epoch_start(ctx)
    loss, stats = model({"crops": crops, "index": torch.randperm(n, generator=g)[:b]})
    loss.backward()
    model.method.after_backward(ctx)
    return loss, model


def check_crops(name: str) -> str:
    import torch

    done = []
    for n_global, n_local in CROP_COUNTS:
        loss, _ = _random_step(name, n_global, n_local)
        if loss.ndim != 0 or not torch.isfinite(loss):
            raise CheckFailed(f"{n_global} global + {n_local} local crops: loss {loss.detach().tolist()} "
                              "(a finite scalar?)")
        done.append(f"{n_global}+{n_local}: {loss.item():.3f}")
    return "loss " + ", ".join(done)


def check_gradients(name: str) -> str:
    import torch

    _, model = _random_step(name, 2, 2)
    grads = [(k, p.grad) for k, p in model.backbone.named_parameters()]
    reached = [k for k, g in grads if g is not None and bool(g.abs().sum() > 0)]
    bad = [k for k, g in grads if g is not None and not bool(torch.isfinite(g).all())]
    if bad:
        raise CheckFailed(f"non-finite gradient in backbone.{bad[0]}")
    if not reached:
        raise CheckFailed("no gradient reaches the backbone (is the loss detached from the projections?)")
    return f"{len(reached)} of {len(grads)} backbone tensors get a gradient"


def same_step(name: str) -> str:
    import torch

    (a, ma), (b, mb) = _random_step(name, 2, 2, seed=5), _random_step(name, 2, 2, seed=5)
    if not torch.equal(a.detach(), b.detach()):
        raise CheckFailed(f"the same seed gave losses {a.item()!r} and {b.item()!r}")
    for (k, p), (_, q) in zip(ma.named_parameters(), mb.named_parameters(), strict=True):
        if (p.grad is None) != (q.grad is None) or (p.grad is not None and not torch.equal(p.grad, q.grad)):
            raise CheckFailed(f"the same seed gave another gradient of {k}")
    return "objective: equal loss and gradients"


# -- the momentum teacher ----------------------------------------------------------------------------------------
def check_teacher(name: str) -> str:
    """For an objective that asks for a momentum teacher: the teacher is there, starts equal to the student, is left
    out of the optimiser and gets no gradient from a step, and one update moves it to m xi + (1 - m) theta at the
    scheduled momentum. Without a teacher: no copy exists (the objective pays nothing)."""
    import torch

    from ssl_bench.config.compose import compose
    from ssl_bench.models.networks import momentum_at
    from ssl_bench.training.optim import build_optimizer

    _, model = _random_step(name, 2, 2)
    if model.method.momentum_teacher() is None:
        if getattr(model, "teacher", None) is not None:
            raise CheckFailed("a teacher was built for an objective that asks for none")
        return "n/a (no momentum teacher)"
    teacher = model.teacher
    if teacher is None:
        raise CheckFailed("the objective asks for a momentum teacher and the model has none")
    params = list(teacher.parameters())
    if any(p.requires_grad or p.grad is not None for p in params):
        raise CheckFailed("a teacher parameter requires or got a gradient")
    optimised = {id(p) for g in build_optimizer(model, compose(["budget=smoke", f"method={name}"])).param_groups
                 for p in g["params"]}
    if any(id(p) in optimised for p in params):
        raise CheckFailed("a teacher parameter is in the optimiser's groups")
    student = [model.backbone, model.head, *(getattr(model.method, n) for n in teacher.spec.modules)]
    before = [p.detach().clone() for p in params]
    theirs = [p.detach().clone() for m in student for p in m.parameters()]
    with torch.no_grad():
        for m in student:
            for p in m.parameters():
                p.add_(1.0)
    m = model.update_teacher(3, 10)
    if m is None or abs(m - momentum_at(3, 10, teacher.spec.base_momentum)) > 1e-12:
        raise CheckFailed(f"the teacher's momentum at step 3 of 10 was {m}")
    worst = max(float((p - (m * b + (1 - m) * (s + 1.0))).abs().max()) for p, b, s in zip(params, before, theirs,
                                                                                           strict=True))
    if worst > 1e-5:
        raise CheckFailed(f"one update is not m xi + (1 - m) theta (off by {worst:.2g})")
    return (f"{len(params)} teacher tensors, none trained; momentum {teacher.spec.base_momentum} -> 1; evaluates the "
            f"{teacher.spec.evaluate} by default")
