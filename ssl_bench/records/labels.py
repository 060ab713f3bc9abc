"""A configuration in words: the method's display name and order, the keys that differ from a budget as defined
('SwAV, 10 prototypes'), the crops ('2x28+4x14'). Every table, figure and record loader labels runs with these, so one
configuration has one label everywhere. Records-level: no statistics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

METHOD_ORDER = ("swav", "simclr", "deepclusterv2", "selav2", "carl", "dino", "byol", "barlow_twins")

def display(method: str) -> str:
    """The method's display name, from its registration (``@register(name, Config, display=...)``)."""
    from ssl_bench.config.registry import registry

    entry = registry().get(method)
    return entry.display if entry else method


def method_order(methods: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in present] + sorted(m for m in present if m not in METHOD_ORDER)


def crops_label(cfg: Mapping[str, Any]) -> str:
    """'2x28' or '2x28+4x14': global (and local) crops as count x size."""
    g, loc = cfg["crops"]["global"], cfg["crops"]["local"]
    return f"{g['n']}x{g['size']}" + (f"+{loc['n']}x{loc['size']}" if loc["n"] else "")


# -- labels ----------------------------------------------------------------------------------------
def _plural(v: Any, one: str, many: str) -> str:
    return f"{v} {one if v == 1 else many}"


# Plain words for keys that studies and sweeps vary; any other key is written key=value.
PHRASES: dict[str, Any] = {
    "method.num_prototypes": lambda v: _plural(v, "prototype", "prototypes"),
    "method.sinkhorn_iterations": lambda v: _plural(v, "Sinkhorn iteration", "Sinkhorn iterations"),
    "method.epsilon": lambda v: f"epsilon {v}",
    "method.temperature": lambda v: f"temperature {v}",
    "method.queue_length": lambda v: "no queue" if v == 0 else f"queue of {v}",
    "method.queue_start_epoch": lambda v: f"queue from epoch {v}",
    "method.fixed_prototypes": lambda v: "fixed random prototypes" if v else "learned prototypes",
    "method.hard_codes": lambda v: "hard codes" if v else "soft codes",
    "method.kl_mode": lambda v: "KL of the pooled views" if v == "pooled" else "KL per view",
    "method.lambda_epochs": lambda v: "constant lambda" if v == 0 else f"lambda decays over {v} epochs",
    "method.lambda_start": lambda v: f"initial lambda {v}",
    "method.lambda_end": lambda v: f"final lambda {v}",
    "crops.local.n": lambda v: "no local crops" if v == 0 else _plural(v, "local crop", "local crops"),
    "crops.global.n": lambda v: _plural(v, "global crop", "global crops"),
    "train.epochs": lambda v: _plural(v, "epoch", "epochs"),
    "data.batch_size": lambda v: f"batch {v}",
    "data.train_subset": lambda v: f"{v} pretraining images" if v else "all pretraining images",
    "optim.lr": lambda v: f"lr {v}",
    "optim.name": lambda v: f"{v} optimiser",
    "backbone.name": lambda v: f"{v} backbone",
    "train.precision": lambda v: f"{v} precision",
}


def phrase(key: str, value: Any) -> str:
    f = PHRASES.get(key)
    if f is not None:
        return f(value)
    short = key[len("method."):] if key.startswith("method.") else key
    return f"{short}={value}"


def label(method: str, diffs: Mapping[str, Any], with_method: bool = True) -> str:
    """'SwAV, 10 prototypes, 1 Sinkhorn iteration': the method and the keys that differ from its budget as
    defined (``diffs``: key -> this run's value); 'SwAV' alone for the budget as defined."""
    words = [phrase(k, v) for k, v in sorted(diffs.items())]
    parts = ([display(method)] if with_method else []) + words
    return ", ".join(parts) if parts else "budget as defined"
