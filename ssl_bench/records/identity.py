"""What a run *is*: its configuration, the configuration's id, its label and its folder name.

A run's **configuration** is its resolved config, flattened to ``dotted.key -> value``, minus the seed, the
group choices and override list (bookkeeping), and the keys that cannot change the result
(:data:`ssl_bench.config.schema.NON_CONFIGURATION_KEYS`, declared once in the schema). Two runs are seeds of one
configuration exactly when their configurations are equal.

Records outlive the schema: a record written before a key existed is read as if it had the key's schema
default, and a key the schema no longer has is ignored, so adding a key with a default never orphans old
records. The **configuration id** hashes only the entries that differ from the schema's defaults, so it too
is unchanged by a new key at its default.

The **differences** of a run are the configuration keys whose values differ from its budget *as defined*
(``method=<m> dataset=<d> budget=<b>`` with no other override); they name the run's folder
(``<method>-<dataset>-<budget>[-<differences>]-s<seed>-<configuration id>``) and, in words, its label.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.registry import registry
from ssl_bench.config.schema import NON_CONFIGURATION_KEYS, RunConfig

# Top-level entries that are bookkeeping, never part of a configuration.
BOOKKEEPING = ("seed", "choices", "overrides")
_MISSING = object()


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


@functools.cache
def _framework_defaults() -> dict[str, Any]:
    tree = OmegaConf.to_container(OmegaConf.structured(RunConfig), throw_on_missing=False)
    tree.pop("method", None)
    return flatten(tree)


@functools.cache
def _method_defaults(method: str) -> dict[str, Any]:
    entry = registry().get(method)
    if entry is None:
        return {}
    tree = OmegaConf.to_container(OmegaConf.structured(entry.config), throw_on_missing=False)
    return flatten(tree, "method.")


def schema_defaults(method: str) -> dict[str, Any]:
    """Every schema key with its default (the framework's and ``method``'s), flattened."""
    return {**_framework_defaults(), **_method_defaults(method)}


def _non_configuration(key: str) -> bool:
    return key.split(".")[0] in BOOKKEEPING or any(key == k or key.startswith(k + ".") for k in NON_CONFIGURATION_KEYS)


def configuration(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The configuration of a resolved config or a record's config.yaml: sorted ``dotted.key -> value``."""
    flat = flatten(as_dict(cfg))
    if flat.get("train.precision", "no") is None:  # unset: what `accelerate launch` says, as the run will use it
        flat["train.precision"] = os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    defaults = schema_defaults(str(flat.get("method.name")))
    # Crop kinds are a dict in the schema; any other key the schema no longer has is ignored.
    known = {k for k in defaults if not _non_configuration(k)}
    out = {k: defaults[k] for k in known}
    out.update({k: v for k, v in flat.items() if k in known or k.startswith("crops.")})
    return {k: out[k] for k in sorted(out) if not _non_configuration(k)}


def configuration_id(cfg: DictConfig | Mapping[str, Any]) -> str:
    """An 8-character hash of the method's name and the configuration's entries that differ from the schema
    defaults."""
    conf = configuration(cfg)
    defaults = schema_defaults(str(conf.get("method.name")))
    changed = {k: v for k, v in conf.items() if defaults.get(k, _MISSING) != v or k == "method.name"}
    return hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]


@functools.cache
def _budget_as_defined(method: str, dataset: str, budget: str) -> dict[str, Any] | None:
    try:
        return configuration(compose([f"method={method}", f"dataset={dataset}", f"budget={budget}"]))
    except ConfigError:
        return None  # the budget or dataset no longer exists: no differences can be named


def choices(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    data = as_dict(cfg)
    c = data.get("choices") or {}
    return {"method": str(c.get("method") or data["method"]["name"]),
            "dataset": str(c.get("dataset") or data["dataset"]["name"]), "budget": str(c.get("budget") or "?")}


def differences(cfg: DictConfig | Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Configuration keys that differ from the run's budget as defined: ``key -> (budget's value, run's value)``."""
    c = choices(cfg)
    ref = _budget_as_defined(c["method"], c["dataset"], c["budget"])
    if ref is None:
        return {}
    conf = configuration(cfg)
    return {k: (ref.get(k), conf.get(k)) for k in sorted(set(ref) | set(conf)) if ref.get(k) != conf.get(k)}


def _short_key(key: str, keys: list[str]) -> str:
    """'method.num_prototypes' -> 'num_prototypes'; 'crops.local.n' -> 'local.n' (the leaf alone when it is
    unambiguous and says something)."""
    parts = key.split(".")
    leaf = parts[-1]
    if len(leaf) > 2 and sum(k.split(".")[-1] == leaf for k in keys) == 1:
        return leaf
    return ".".join(parts[-2:])


def _value_text(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "_".join(_value_text(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def run_name(cfg: DictConfig | Mapping[str, Any], seed: int | None = None, most: int = 3) -> str:
    """``swav-fashion_mnist-demo-num_prototypes=10,sinkhorn_iterations=1-s0-1a2b3c4d``: method, dataset, budget,
    the keys that differ from the budget as defined (at most ``most``, then ``+N``), seed, configuration id."""
    data = as_dict(cfg)
    c = choices(data)
    diff = differences(data)
    keys = list(diff)
    parts = [f"{_short_key(k, keys)}={_value_text(diff[k][1])}" for k in keys[:most]]
    if len(keys) > most:
        parts.append(f"+{len(keys) - most}")
    seed = data.get("seed", 0) if seed is None else seed
    name = "-".join([c["method"], c["dataset"], c["budget"], *([",".join(parts)] if parts else []),
                     f"s{seed}", configuration_id(data)])
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", name)


def run_id(cfg: DictConfig) -> str:
    """The run's folder name under ``output_dir``: ``cfg.run_id`` when set, else :func:`run_name`."""
    return str(cfg.run_id) if cfg.get("run_id") else run_name(cfg)
