"""Experiment trackers (``train.trackers``) through Accelerate's ``log_with``.

Per optimiser step (every ``train.log_every`` steps) the trainer logs ``train/loss`` and ``train/lr``; after each
epoch, the epoch's metrics row as ``epoch/<key>``; all at the global optimiser step, so every tracker sees one
increasing step axis (wandb drops values logged at an earlier step). TensorBoard writes to ``<run>/tensorboard``;
wandb and mlflow log to the project / experiment ``ssl_bench`` with the run id as the run's name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# tracker -> the module it needs, which is also the name of its pip extra (pyproject.toml).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
PROJECT = "ssl_bench"


def tracker_names(train: DictConfig) -> list[str]:
    """``train.trackers``, plus tensorboard for the older ``train.tensorboard=true``; each once, in order."""
    names = [str(t) for t in train.get("trackers", [])]
    if train.get("tensorboard"):
        names.append("tensorboard")
    return list(dict.fromkeys(names))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails, or a module blocked in sys.modules
        return False


def tracker_problem(train: DictConfig) -> str | None:
    """One line for the first unknown or uninstalled tracker of ``train``, else None."""
    for name in tracker_names(train):
        if name not in TRACKERS:
            return f"unknown train.trackers entry '{name}'; valid choices: {', '.join(TRACKERS)}"
        if not _installed(TRACKERS[name]):
            return f"tracker '{name}' needs the {TRACKERS[name]} package: pip install 'ssl_bench[{name}]'"
    return None


def log_with(cfg: DictConfig, run_dir: Path) -> list[Any] | None:
    """Accelerate's ``log_with`` for the run: TensorBoard as a tracker object (so its files stay in
    ``<run>/tensorboard`` whatever the project name), the others by name."""
    names = tracker_names(cfg.train)
    if not names:
        return None
    from accelerate.tracking import TensorBoardTracker

    return [TensorBoardTracker("tensorboard", str(run_dir)) if n == "tensorboard" else n for n in names]


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to ``dotted.key -> scalar`` (lists and null as text): what every tracker
    accepts as a run's configuration."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node if isinstance(node, bool | int | float | str) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def start_trackers(cfg: DictConfig, accelerator: Any, rid: str, run_dir: Path) -> None:
    """Start the run's trackers (main process; a no-op without trackers)."""
    if not tracker_names(cfg.train):
        return
    accelerator.init_trackers(PROJECT, config=hyperparameters(cfg),
                              init_kwargs={"wandb": {"name": rid, "dir": str(run_dir)}, "mlflow": {"run_name": rid}})


def scalars(values: dict[str, Any], prefix: str) -> dict[str, float]:
    """The numbers of ``values`` with keys prefixed, as trackers take them."""
    return {f"{prefix}{k}": v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
