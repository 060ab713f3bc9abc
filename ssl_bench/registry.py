"""The registry of objectives: the one list of methods (config validation, compare, studies, tables and tests derive
from it).

A leaf module without torch, so that ``ssl_bench.config`` can import it at the top and stay cheap to import. The
dependencies point one way: a method file (``methods/<name>.py``, installed as ``ssl_bench.methods.<name>``) imports
:func:`register` from here (through ``ssl_bench.methods.base``) and never the config; the config imports this module
and never a method file. :func:`registry` finds the method files by listing the ``ssl_bench.methods`` package (plugin
discovery, at call time), which is when torch is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

METHODS_PACKAGE = "ssl_bench.methods"
# Modules of the package that are not objectives (the interface, shared helpers).
_NOT_METHODS = ("base",)


@dataclass
class MethodEntry:
    cls: Any  # the Method subclass (ssl_bench.methods.base.Method)
    config: type  # its config dataclass: every default of the objective, declared once
    display: str  # how tables and figures write the method's name

    def validate(self, cfg: DictConfig) -> None:
        self.config(**OmegaConf.to_container(cfg.method))  # the dataclass's __post_init__ range checks
        self.cls.check_config(cfg)


_REGISTRY: dict[str, MethodEntry] = {}


def register(name: str, config: type, display: str | None = None) -> Callable[[type], type]:
    """Class decorator of a method file: ``@register("swav", SwAVConfig, "SwAV")``."""

    def deco(cls: type) -> type:
        _REGISTRY[name] = MethodEntry(cls, config, display or name)
        return cls

    return deco


def registry() -> dict[str, MethodEntry]:
    """Every objective by name, sorted. Imports every method file (not only while the registry is empty: a caller
    may have imported one already)."""
    package = importlib.import_module(METHODS_PACKAGE)  # wherever its files are (methods/ in a checkout)
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in _NOT_METHODS:
            importlib.import_module(f"{METHODS_PACKAGE}.{mod.name}")
    return dict(sorted(_REGISTRY.items()))
