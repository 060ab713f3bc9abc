"""Backbone weights in and out: from any method's run checkpoint or a plain state_dict file, and exported as a
plain (torchvision-style) state_dict.

Every method shares the backbone, so a checkpoint of any method loads the same way: the ``backbone.*`` entries
of the run's ``checkpoint/model.safetensors`` (Accelerate's save of the SSLModel: ``backbone.*``, ``head.*``,
``method.*``, and ``teacher.*`` for an objective with a momentum teacher, whose backbone ``eval.network=teacher``
reads). A file given directly (``.safetensors``, ``.pt``, ``.pth``, ``.bin``) may hold such a full state,
a plain backbone state_dict, a torchvision classifier's (its ``fc.*`` is dropped), or either nested under
``state_dict`` / ``model`` and with DDP's ``module.`` prefix.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_bench.errors import ConfigError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, as a flat {name: tensor} dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle of arbitrary objects, ...: one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot read checkpoint {path}: {msg}") from exc
    while isinstance(state, dict) and not any(isinstance(v, Tensor) for v in state.values()):
        nested = next((state[k] for k in ("state_dict", "model", "backbone") if isinstance(state.get(k), dict)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"checkpoint {path} holds no state_dict (a dict of tensors)")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def backbone_state(state: dict[str, Tensor], network: str = "student") -> dict[str, Tensor]:
    """The backbone's entries of a full model state (``backbone.*``, or ``teacher.backbone.*`` for ``network`` =
    teacher: a momentum teacher's) or of a plain one, without prefixes."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if network == "teacher":
        if not any(k.startswith("teacher.backbone.") for k in state):
            raise ConfigError("eval.network=teacher: the checkpoint holds no momentum teacher (teacher.backbone.*)")
        return {k.removeprefix("teacher.backbone."): v for k, v in state.items() if k.startswith("teacher.backbone.")}
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return state


def load_backbone(backbone: nn.Module, path: str | Path, network: str = "student") -> nn.Module:
    """Load the backbone weights of ``path`` into ``backbone`` (the student's, or with ``network`` = teacher a
    momentum teacher's): every backbone tensor must be there with the same shape (a mismatch is one line naming the
    first differences)."""
    state = backbone_state(read_state(path), network)
    own = backbone.state_dict()
    if not any(k.startswith("fc.") for k in own):  # our backbones end at the pooled features
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(x)} {what} (e.g. {x[0]})" for x, what in ((missing, "missing"), (unexpected, "unexpected"),
                                                                  (shapes, "with another shape")) if x]
        raise ConfigError(f"checkpoint {path} does not fit the {type(backbone).__name__} backbone of this config: "
                          f"{', '.join(parts)}; set backbone=/backbone.* to the architecture it was trained with")
    backbone.load_state_dict(state)
    return backbone


def export_backbone(backbone: nn.Module, path: str | Path) -> Path:
    """Write the backbone's state_dict (plain names: ``conv1.weight``, ``layer1.0.bn1.running_mean``, ...; no
    ``fc``) to ``path``: safetensors for a .safetensors name, else torch.save. A torchvision ResNet loads it
    with ``net.fc = nn.Identity(); net.load_state_dict(state)`` (with the small-image stem, first replace
    ``net.conv1`` by a 3x3 stride-1 conv and ``net.maxpool`` by Identity, as ssl_bench.models.networks does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp))
    else:
        torch.save(state, str(tmp))
    tmp.replace(path)
    return path
