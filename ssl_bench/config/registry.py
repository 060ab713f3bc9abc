"""The registry of objectives: the one list of methods (config validation, compare, studies, tables and tests derive
from it), and the one adapter from a run's config to an objective's constructor.

A leaf module without torch at import, so that ``ssl_bench.config.compose`` can import it at the top and stay cheap to
import.
The dependencies point one way: a method file imports :func:`register` from here (through ``ssl_bench.methods.base``)
and never the config; the config imports this module and never a method file. :func:`registry` finds the objectives
at call time (which is when torch is imported) in two places:

- the shipped ones: the modules of the ``ssl_bench.methods`` package (the top-level ``methods/`` folder of a checkout);
- other packages' ones: the entry points of the group ``ssl_bench.methods``, each ``<name> = <module>:<Class>`` with
  the class decorated by ``@register("<name>", <Config dataclass>)``. A plug-in that fails to load is skipped with one
  line naming its entry point; the shipped objectives never depend on it.

Objectives are constructed from keyword arguments (usable in any PyTorch loop): :func:`method_kwargs` maps the run's
``method`` section (the fields of the config dataclass) and the run values a constructor names (:func:`run_values`)
to those arguments.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_bench.errors import ConfigError

METHODS_PACKAGE = "ssl_bench.methods"
ENTRY_POINT_GROUP = "ssl_bench.methods"
# Modules of the package that are not objectives (the interface, shared helpers).
_NOT_METHODS = ("base",)
# A method name is a config group option and part of run folder names.
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class MethodEntry:
    cls: Any  # the Method subclass (ssl_bench.methods.base.Method)
    config: type  # its config dataclass: every default of the objective, declared once
    display: str  # how tables and figures write the method's name
    source: str = ""  # where it came from: the module, or the entry point of a plug-in

    def validate(self, cfg: DictConfig) -> None:
        """The dataclass's range checks, then the constructor's own (it is the one place an objective checks its
        arguments): built once on the CPU with the RNG state restored after, so validating draws no random number."""
        import torch

        self.config(**OmegaConf.to_container(cfg.method))
        with torch.random.fork_rng(devices=[]):
            try:
                evaluated_network(cfg, build_method(cfg, cfg.head.out_dim))
            except ConfigError:
                raise
            except Exception as exc:  # an objective that checks with other exceptions (or not at all): one line too
                raise ConfigError(f"method {cfg.method.name}: {_one_line(exc)}") from exc


_REGISTRY: dict[str, MethodEntry] = {}
# Plug-ins (entry points) that could not be loaded, by name: the one-line reason.
_BROKEN: dict[str, str] = {}
_plugins_loaded = False


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def registration_problem(name: str, config: type, cls: type) -> str | None:
    """What is wrong with registering ``cls`` as ``name`` with ``config`` (None when nothing is)."""
    if not _NAME.fullmatch(name):
        return f"the name '{name}' must be lower-case letters, digits and '_' (it names a config option and folders)"
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        return f"its config {config!r} is not a dataclass (every default of the objective, declared once)"
    fields = {f.name: f for f in dataclasses.fields(config)}
    if "name" not in fields or fields["name"].default != name:
        return f"its config {config.__name__} needs a field name: str = '{name}' (method.name of a run)"
    if not (isinstance(cls, type) and callable(getattr(cls, "loss", None))):
        return f"{cls!r} is not an objective class (subclass ssl_bench.methods.base.Method and define loss)"
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        missing = [f for f in fields if f != "name" and f not in params]
        if missing:
            return (f"{cls.__name__}() takes no argument {missing[0]} (each field of {config.__name__} but name is "
                    "a keyword argument of the constructor)")
    old = _REGISTRY.get(name)
    if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
        return f"'{name}' is already registered by {old.source or old.cls.__module__}"
    return None


def register(name: str, config: type, display: str | None = None) -> Callable[[type], type]:
    """Class decorator of an objective: ``@register("swav", SwAVConfig, display="SwAV")``. A bad registration (name,
    config dataclass, constructor arguments, a name taken) is a ConfigError of one line."""

    def deco(cls: type) -> type:
        problem = registration_problem(name, config, cls)
        if problem:
            raise ConfigError(f"cannot register the objective '{name}': {problem}")
        _REGISTRY[name] = MethodEntry(cls, config, display or name, cls.__module__)
        return cls

    return deco


def _load_plugin(ep: EntryPoint) -> str | None:
    """Import one entry point; returns the one-line problem, and leaves the registry as it was, when it fails."""
    where = f"objective plug-in '{ep.name}' (entry point '{ep.name} = {ep.value}' of group {ENTRY_POINT_GROUP})"
    if ep.name in _REGISTRY and _REGISTRY[ep.name].source.startswith(METHODS_PACKAGE + "."):
        return f"{where} skipped: '{ep.name}' is a shipped objective"
    before = dict(_REGISTRY)
    try:
        obj = ep.load()
    except Exception as exc:  # any error of someone else's package: one line, never a traceback
        _REGISTRY.clear()
        _REGISTRY.update(before)
        return f"{where} skipped: {_one_line(exc)}"
    entry = _REGISTRY.get(ep.name)
    if entry is None or entry.cls is not obj:
        _REGISTRY.clear()
        _REGISTRY.update(before)
        return (f"{where} skipped: it must name a class decorated with @register('{ep.name}', <config dataclass>) "
                f"from ssl_bench.methods.base, got {obj!r}")
    entry.source = f"entry point '{ep.name} = {ep.value}'"
    return None


def load_plugins(force: bool = False) -> dict[str, str]:
    """Load the entry points of group ``ssl_bench.methods`` (once per process unless ``force``); each one that fails
    is reported on stderr in one line and skipped. Returns the problems by entry-point name."""
    global _plugins_loaded
    if _plugins_loaded and not force:
        return dict(_BROKEN)
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        problem = _load_plugin(ep)
        if problem and _BROKEN.get(ep.name) != problem:
            print(f"warning: {problem}", file=sys.stderr)
        if problem:
            _BROKEN[ep.name] = problem
        else:
            _BROKEN.pop(ep.name, None)
    return dict(_BROKEN)


def registry() -> dict[str, MethodEntry]:
    """Every objective by name, sorted: the shipped ones (every module of ssl_bench.methods, imported each call: a
    caller may have imported one already), then the plug-ins."""
    package = importlib.import_module(METHODS_PACKAGE)
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in _NOT_METHODS:
            importlib.import_module(f"{METHODS_PACKAGE}.{mod.name}")
    load_plugins()
    return dict(sorted(_REGISTRY.items()))


# -- the adapter: run config -> constructor arguments ------------------------------------------------------------
def run_values(cfg: DictConfig, embed_dim: int) -> dict[str, Any]:
    """What a run can tell an objective beyond its hyperparameters; a constructor gets those it names."""
    return {
        "embed_dim": embed_dim,  # the projection head's output (head.out_dim)
        "head_hidden_dim": int(cfg.head.hidden_dim),  # the projection head's hidden width (BYOL's predictor copies it)
        "num_global_crops": int(cfg.crops["global"].n),
        "num_local_crops": int(cfg.crops["local"].n),
        "batch_size": int(cfg.data.batch_size),  # the global batch, all processes together
        "num_samples": int(cfg.data.train_subset) or None,  # pretraining images when the config fixes them
        "seed": int(cfg.seed),
    }


def method_kwargs(cfg: DictConfig, embed_dim: int) -> dict[str, Any]:
    """The constructor arguments of ``cfg.method.name``: every field of ``cfg.method`` but ``name``, plus the
    :func:`run_values` its constructor names (all of them for a constructor taking ``**kwargs``)."""
    entry = registry()[cfg.method.name]
    hparams = OmegaConf.to_container(cfg.method, resolve=True)
    hparams.pop("name", None)  # type: ignore[union-attr]
    params = inspect.signature(entry.cls).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    run = {k: v for k, v in run_values(cfg, embed_dim).items() if takes_all or k in params}
    return {**hparams, **run}  # type: ignore[dict-item]


def evaluated_network(cfg: DictConfig, method: Any = None) -> str:
    """``eval.network`` resolved for a run: the key's value, else the network the objective's paper reports (its
    momentum teacher's ``evaluate``; ``student`` without one). Checked: one of student, teacher, and teacher only
    for an objective with a momentum teacher. ``method``: the built objective (built here when not given)."""
    network = cfg.eval.get("network")
    if network not in (None, "student", "teacher"):
        raise ConfigError(f"unknown eval.network '{network}'; valid choices: student, teacher (or null: the network "
                          "the method's paper reports)")
    if method is None:
        import torch

        with torch.random.fork_rng(devices=[]):
            method = build_method(cfg, cfg.head.out_dim)
    teacher = method.momentum_teacher() if hasattr(method, "momentum_teacher") else None
    if network == "teacher" and teacher is None:
        raise ConfigError(f"eval.network=teacher: method {cfg.method.name} has no momentum teacher (valid choice: "
                          "student)")
    return network or (teacher.evaluate if teacher is not None else "student")


def build_method(cfg: DictConfig, embed_dim: int) -> Any:
    """The objective of a run: ``registry()[cfg.method.name].cls(**method_kwargs(cfg, embed_dim))``."""
    return registry()[cfg.method.name].cls(**method_kwargs(cfg, embed_dim))
