"""Where configs are found: the shipped experiments/ folder, then the user's folders in $SSL_BENCH_CONFIG_PATH,
each laid out like experiments/ (method/, dataset/, budget/, study/, sweep/, ...). A leaf (no Hydra, no torch) that
the data sources import for their class lists, and composition, validation and the entry points for the options.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ssl_bench.config.registry import registry  # the one list of methods; torch-free, and no method file imports config
from ssl_bench.errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # ssl_bench/
# The shipped configs. A wheel carries them inside the package (pyproject maps experiments/ to ssl_bench/experiments);
# a source checkout, editable or not, has no such copy and reads experiments/ beside the package, the folder users edit.
EXPERIMENTS_DIR = next((d for d in (_PACKAGE_DIR / "experiments", _PACKAGE_DIR.parent / "experiments")
                        if (d / "config.yaml").is_file()), _PACKAGE_DIR / "experiments")
# A user's own config folders (os.pathsep-separated), each laid out like experiments/ (method/, budget/, study/,
# sweep/, ...): their files are options in addition to the shipped ones.
CONFIG_PATH_ENV = "SSL_BENCH_CONFIG_PATH"
# The config groups every run chooses an option of.
GROUPS = ("method", "dataset", "backbone", "budget")


def config_dirs() -> list[Path]:
    """Where configs are looked up: the shipped ones (whose config.yaml is the primary config), then the folders
    in $SSL_BENCH_CONFIG_PATH. Missing shipped configs are a ConfigError, never an empty list of choices."""
    if not (EXPERIMENTS_DIR / "config.yaml").is_file():
        raise ConfigError(f"the shipped configs are missing (no {EXPERIMENTS_DIR / 'config.yaml'}): ssl_bench is not "
                          "installed completely; reinstall it (pip install ssl_bench, or pip install . in a checkout)")
    dirs = [EXPERIMENTS_DIR.resolve()]
    for entry in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"{CONFIG_PATH_ENV}: no folder '{entry}' (folders laid out like experiments/, "
                              f"separated by '{os.pathsep}')")
        if path not in dirs:
            dirs.append(path)
    return dirs


def config_files(group: str, pattern: str = "*.yaml") -> dict[str, list[Path]]:
    """The files of a config group on the search path by file name, each with its paths (the shipped one first)."""
    found: dict[str, list[Path]] = {}
    for d in config_dirs():
        for p in sorted((d / group).glob(pattern)):
            found.setdefault(p.name, []).append(p)
    return dict(sorted(found.items()))


def config_file(group: str, name: str) -> Path | None:
    """The file ``name`` (e.g. ``smoke.yaml``) of a group on the search path, None when there is none. A name in two
    folders is a ConfigError: a user's folder adds options, it never silently loses to (or hides) a shipped one."""
    paths = [d / group / name for d in config_dirs() if (d / group / name).is_file()]
    if len(paths) > 1:
        raise ConfigError(f"{group} '{Path(name).stem}' is defined twice: {paths[0]} and {paths[1]}; rename yours "
                          f"({CONFIG_PATH_ENV} adds options to the shipped ones, it cannot replace them)")
    return paths[0] if paths else None


class ConfigGroupDir:
    """A config group folder on the search path, usable where a Path to experiments/<group> was:
    ``dir / "name.yaml"`` is that file in whichever folder holds it (the shipped path when none does) and
    ``dir.glob("*.yaml")`` yields every option once."""

    def __init__(self, group: str) -> None:
        self.group = group

    def __truediv__(self, name: str) -> Path:
        return config_file(self.group, name) or EXPERIMENTS_DIR / self.group / name

    def glob(self, pattern: str) -> Iterator[Path]:
        return (paths[0] for paths in config_files(self.group, pattern).values())

    def __str__(self) -> str:
        return " and ".join(str(d / self.group) for d in config_dirs())


def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML files in <group>/ of every config folder (see config_dirs); for
    ``method`` also every registered objective (a plug-in's config group is generated from its dataclass)."""
    options = sorted(Path(name).stem for name in config_files(group))
    if group == "method" and options:
        options = sorted({*options, *registry()})
    if not options:
        raise ConfigError(f"no {group} configs: no {group}/*.yaml in "
                          f"{', '.join(str(d) for d in config_dirs())}; reinstall ssl_bench")
    return options
