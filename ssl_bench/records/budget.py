"""Budget fingerprints: what must be identical for runs of different methods to be compared.

A run's *budget* is its configuration (ssl_bench/records/identity.py: the resolved config minus the seed and the
keys that cannot change the result) minus the objective (``method.*``). Everything else (backbone,
head, batch size, training subset, crops, augmentations, optimiser, epochs, steps, precision, gradient
accumulation, evaluation protocol, dataset) is part of it: two runs with the same budget fingerprint
differ only in the objective and the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from ssl_bench.records.identity import configuration


def budget_items(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The budget of a resolved config (or a record's config.yaml) as flat ``dotted.key -> value`` pairs: its
    configuration (ssl_bench/records/identity.py) without the objective's keys (``method.*``)."""
    return {k: v for k, v in configuration(cfg).items() if not k.startswith("method.")}


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
