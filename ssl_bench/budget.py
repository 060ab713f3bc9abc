"""Budget fingerprints: what must be identical for runs of different methods to be compared.

A run's *budget* is its resolved config minus the objective (``method.*``), the seed and the keys that
only say where and how a run is stored or reported (``NON_BUDGET_KEYS``). Everything else (backbone,
head, batch size, training subset, crops, augmentations, optimiser, epochs, steps, precision, gradient
accumulation, evaluation protocol, dataset) is part of it: two runs with the same budget fingerprint
differ only in the objective and the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_bench.config import NON_FINGERPRINT_KEYS

# Top-level keys that are not part of the budget: the objective, the seed, and bookkeeping.
NON_BUDGET_PREFIXES = ("method", "seed", "choices", "overrides")
# Keys that change neither what is computed nor how it is evaluated.
NON_BUDGET_KEYS = (*NON_FINGERPRINT_KEYS, "train.checkpoint_every", "dataset.download")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def budget_items(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The budget of a resolved config as flat ``dotted.key -> value`` pairs (lists kept as lists)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    flat = _flatten(data)
    return {k: v for k, v in sorted(flat.items())
            if k.split(".")[0] not in NON_BUDGET_PREFIXES and k not in NON_BUDGET_KEYS}


def budget_fingerprint(cfg: DictConfig | Mapping[str, Any]) -> str:
    """An 8-character hash of :func:`budget_items`; equal for runs that differ only in method and seed."""
    blob = json.dumps(budget_items(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def budget_diff(a: Mapping[str, Any], b: Mapping[str, Any], ignore_missing: bool = False
                ) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two :func:`budget_items` dicts: ``key -> (value in a, value in b)``.
    A key missing on one side (a record written before the key existed) shows as ``'<missing>'``, or is
    skipped with ``ignore_missing``."""
    missing = "<missing>"
    keys = sorted(set(a) & set(b)) if ignore_missing else sorted(set(a) | set(b))
    return {k: (a.get(k, missing), b.get(k, missing)) for k in keys if a.get(k, missing) != b.get(k, missing)}


def describe_diff(diff: Mapping[str, tuple[Any, Any]], names: tuple[str, str] = ("a", "b"), limit: int = 8) -> str:
    """One line: ``data.batch_size (a: 64, b: 128), optim.lr (a: 0.6, b: 0.3)``."""
    parts = [f"{k} ({names[0]}: {va}, {names[1]}: {vb})" for k, (va, vb) in diff.items()]
    more = f", and {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more
