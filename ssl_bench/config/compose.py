"""Composition of the run config: experiments/config.yaml, the chosen group options and ``key=value`` overrides,
through Hydra, into one resolved and validated config.

``compose(["method=swav", "dataset=cifar10", "method.epsilon=0.03"])`` returns the resolved config.
Anything wrong (an unknown group option or key, a value of the wrong type or out of range) raises
:class:`ConfigError` with a one-line message that names the valid choices. The defaults are the schema's
(ssl_bench.config.schema), the options come from the config search path (ssl_bench.config.searchpath), the range checks
are
ssl_bench.config.validation's.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ssl_bench.config.help import register_help
from ssl_bench.config.registry import registry
from ssl_bench.config.schema import RunConfig
from ssl_bench.config.searchpath import GROUPS, config_dirs, config_file, config_files, group_options
from ssl_bench.config.validation import check as _check
from ssl_bench.config.validation import class_list, validate
from ssl_bench.errors import ConfigError


def _register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for name, entry in registry().items():
        cs.store(group="method", name=f"{name}_schema", node=entry.config)
        if config_file("method", f"{name}.yaml") is None:  # an objective of another package: its dataclass is the
            cs.store(group="method", name=name, node=entry.config)  # option, as a YAML naming <name>_schema would be
    if "ssl_bench.yaml" not in cs.repo.get("hydra", {}).get("help", {}):
        register_help("")  # config.yaml selects it; its text costs ~0.1 s, so only `ssl_bench.run` generates it


def _check_unique_choices(cfg: DictConfig) -> None:
    for group, choice in cfg.hydra.runtime.choices.items():
        if choice is not None and not group.startswith("hydra"):
            config_file(group, f"{choice}.yaml")


def _searchpath_override(dirs: list[Path]) -> list[str]:
    """Hydra's own search path (appended after the primary config folder) for the user's folders."""
    if not dirs:
        return []
    quoted = ("'file://" + str(d).replace("'", "\\'") + "'" for d in dirs)  # quoted: a path may hold ',' or ' '
    return [f"hydra.searchpath=[{','.join(quoted)}]"]


def _split_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    groups, keys = {}, []
    for o in overrides:
        _check("=" in o or o.startswith("~"),
               f"cannot read '{o}': overrides are key=value, +key=value or ~key (e.g. method=swav data.batch_size=64)")
        k, v = o.split("=", 1) if "=" in o else (o, "")
        if k.lstrip("+") in GROUPS:  # ~group (no option) goes to Hydra, which says what is wrong with it
            groups[k.lstrip("+")] = v
        else:
            keys.append(o)
    return groups, keys


def _compose(overrides: list[str]) -> DictConfig:
    _register()
    primary, *user = config_dirs()
    # Inside a Hydra application's job (ssl_bench.run, a -m grid) Hydra is already initialised: compose with our
    # own instance and give the application its own back.
    gh = GlobalHydra.instance()
    app = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides + _searchpath_override(user),
                                 return_hydra_config=True)
    finally:
        if app is not None:
            gh.clear()
            gh.initialize(app)


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_settable(cfg: DictConfig, override: str) -> None:
    """``key=value`` must set a key that exists in ``cfg``: else one line naming the valid keys there."""
    key = override.split("=", 1)[0]
    if key.startswith(("+", "~")):  # adding or deleting: Hydra's own rules (caught as one line by compose)
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    while parent and not isinstance(node, DictConfig):  # name the valid keys of the deepest part that exists
        parent, _, leaf = parent.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
    value = override.split("=", 1)[1] if "=" in override else ""
    if (isinstance(node, DictConfig) and leaf in node and key not in GROUPS
            and isinstance(node._get_node(leaf), DictConfig) and not value.lstrip().startswith("{")):
        keys = ", ".join(f"{key}.{k}" for k in list(node[leaf].keys())[:4])
        raise ConfigError(f"'{override}': {key} is a section of keys, not a value; set one of them ({keys}, ...)")
    if not isinstance(node, DictConfig) or leaf not in node:
        valid = sorted(str(k) for k in node.keys() if k != "hydra") if isinstance(node, DictConfig) else []
        where = f"'{parent}'" if parent else "the top level"
        raise ConfigError(f"unknown key '{key}'; valid keys in {where}: {', '.join(valid)}")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose experiments/config.yaml with command-line overrides and validate the result."""
    overrides = list(overrides)
    for o in overrides:  # no schema default for these three (the backbone has one); method_budget is named after two
        group = o[1:].split("=", 1)[0]
        if o.startswith("~") and group in ("method", "dataset", "budget"):
            raise ConfigError(f"'{o}': every run needs a {group}; choose one with {group}=<option> (valid choices: "
                              f"{', '.join(group_options(group))})")
    groups, keys = _split_overrides(overrides)
    for group, choice in groups.items():
        options = group_options(group)
        _check(choice in options, f"unknown {group} '{choice}'; valid choices: {', '.join(options)}")
    group_overrides = [f"{g}={c}" for g, c in groups.items()]
    try:
        base = _compose(group_overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from exc
    _check_unique_choices(base)
    for o in keys:
        check_settable(base, o)
    try:
        cfg = _compose(group_overrides + keys) if keys else base
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        text = f"{_one_line(exc)}: {_one_line(cause)}" if cause is not exc else _one_line(exc)
        missing = re.search(r"Could not find '([\w/]+)/([^'/]+)'", text)  # +method_budget=nope: name the options
        if missing and missing[1] in (*GROUPS, "method_budget"):
            text += f"; valid choices: {', '.join(Path(n).stem for n in config_files(missing[1]))}"
        raise ConfigError(text) from exc
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.choices = choices
    out.overrides = overrides
    if out.dataset.classes is not None:  # num_classes follows the class list
        out.dataset.num_classes = len(class_list(out.dataset.classes))
    validate(out)
    OmegaConf.set_struct(out, True)
    return out
