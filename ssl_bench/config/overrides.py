"""The one override grammar of the entry points besides ssl_bench.run (evaluate, compare, sweep, plot, launch,
reference): ``key=value`` with Hydra's value grammar (``[a,b]`` lists, ``true``/``false``, numbers, ``null``,
quoting), each command's own keys declared once with type, default and a one-line help, from which its
``--help`` is generated. Every other ``key=value`` is a run-config override (validated by
:func:`ssl_bench.config.compose.compose`), or, for commands without run overrides, an unknown key: one line naming the
valid keys, exit 2 (raised as ConfigError; :func:`ssl_bench.config.cli.guarded` prints it).

Names mean the same everywhere: ``seeds`` are training seeds (compare, sweep), evaluation seeds are the run
config's ``eval.seeds``; ``results`` is the results folder; ``name`` the folder of a comparison.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ssl_bench.common import skipped
from ssl_bench.errors import ConfigError

KINDS = ("str", "int", "float", "bool", "list[str]", "list[int]", "list[float]")
# Every command that reads run records takes it (see ssl_bench.common.skipped); check=true implies it.
STRICT_HELP = "a run folder whose record cannot be read is an error (exit 2), not a warning and a skip"


@dataclass(frozen=True)
class Key:
    """One key of a command: ``kind`` one of KINDS; a default of None means "unset" (the help says what then)."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """A command's own keys. ``overrides``: what the other key=value arguments are (None: there are none)."""

    name: str
    usage: str
    keys: tuple[Key, ...]
    overrides: str | None = None
    # old spelling -> (new key, the note printed once when the old one is used)
    deprecated: dict[str, tuple[str, str]] = field(default_factory=dict)
    footer: str = ""

    def help(self) -> str:
        rows = [(f"{k.name}={_show(k.default)}", k.help + (f" ({', '.join(k.choices)})" if k.choices else ""))
                for k in self.keys]
        width = max(len(a) for a, _ in rows)
        lines = [self.usage.rstrip(), "", "Keys of its own (key=default):"]
        lines += [f"  {a:<{width}}  {b}" for a, b in rows]
        if "strict" not in {k.name for k in self.keys}:
            lines += ["", f"  {'strict=false':<{width}}  {STRICT_HELP}"]
        if self.overrides:
            lines += ["", self.overrides]
        if self.footer:
            lines += ["", self.footer.rstrip()]
        return "\n".join(lines)

    def parse(self, argv: list[str]) -> tuple[dict[str, Any], list[str], set[str]]:
        """(own values, defaults filled in; the other key=value arguments; the own keys given)."""
        keys = {k.name: k for k in self.keys}
        own = {k.name: k.default for k in self.keys}
        given: set[str] = set()
        rest: list[str] = []
        for a in argv:
            key, sep, value = a.partition("=")
            if not sep and not (self.overrides and a.startswith("~")):
                raise ConfigError(f"cannot read '{a}': arguments are key=value ({self.name} --help lists the keys)")
            if key in self.deprecated:
                key, note = self.deprecated[key]
                print(f"note: {note}", file=sys.stderr)
                if key not in keys:  # renamed to a run-config key
                    rest.append(f"{key}={value}")
                    continue
            if key in keys:
                own[key] = convert(keys[key], value)
                given.add(key)
            elif key == "strict":
                skipped.set_strict(convert(Key("strict", "bool", False, STRICT_HELP), value))
            elif self.overrides is None:
                raise ConfigError(f"unknown key '{key}' for {self.name}; valid keys: {', '.join(keys)}")
            else:
                rest.append(a)
        if own.get("check") is True:  # a check (reference, claims) must not pass by leaving a record out
            skipped.set_strict()
        return own, rest, given


    def split(self, argv: list[str]) -> tuple[dict[str, str], list[str]]:
        """Like parse (every value checked against its key), but the own keys given as typed: for commands whose
        own keys fall back on a file's settings (a sweep file, a study) and are read there."""
        own, rest, given = self.parse(argv)
        raw: dict[str, str] = {}
        for a in argv:
            key, _, value = a.partition("=")
            key = self.deprecated.get(key, (key, ""))[0]
            if key in given:
                raw[key] = value
        return raw, rest


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def parse_value(text: str) -> Any:
    """A value in Hydra's override grammar (what ssl_bench.run reads): lists, bools, numbers, null, quoted strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_override(f"k={text}").value()
    except HydraException as exc:
        raise ConfigError(f"cannot read '{text}': {str(exc).strip().splitlines()[0]}") from exc


def convert(key: Key, text: str) -> Any:
    """``text`` as ``key``'s kind; a wrong type or choice is one line naming what is valid."""
    if key.kind == "str":  # paths and names as typed (a path may hold ',' or ':'), quotes dropped
        value: Any = text.strip().strip("'\"")
        if key.choices and value not in key.choices:
            raise ConfigError(f"unknown {key.name} '{value}'; valid choices: {', '.join(key.choices)}")
        return value
    value = parse_value(text)
    if key.kind == "bool":
        if isinstance(value, str) and value.lower() in ("yes", "no"):  # accepted before the shared grammar
            return value.lower() == "yes"
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        if not isinstance(value, bool):
            raise ConfigError(f"{key.name}={text}: expected true or false")
        return value
    if key.kind in ("int", "float"):
        return _number(key, text, value, int if key.kind == "int" else float)
    item = {"list[str]": str, "list[int]": int, "list[float]": float}[key.kind]
    items = value if isinstance(value, list) else [value]
    if not items or items == [""]:
        raise ConfigError(f"{key.name}= is empty; give a list, e.g. {key.name}=[{'a,b' if item is str else '0,1'}]")
    if item is str:
        out = [str(v) for v in items]
        bad = [v for v in out if key.choices and v not in key.choices]
        if bad:
            raise ConfigError(f"unknown {key.name} '{bad[0]}'; valid choices: {', '.join(key.choices)}")
        return out
    return [_number(key, text, v, item) for v in items]


def _number(key: Key, text: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok:
        what = "an integer" if kind is int else "a number"
        listed = " (or a list of them)" if "list" in key.kind else ""
        raise ConfigError(f"{key.name}={text}: expected {what}{listed}")
    return kind(value)


def help_requested(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def writable_folder(path: Any, key: str, typed: Any = None) -> None:
    """``key=path`` must name a folder this process can create or write into: else one line (ConfigError), raised
    before any work and without creating anything (the first existing ancestor is checked, nothing is made)."""
    import os
    from pathlib import Path

    target = Path(str(path)).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={typed or path}: {existing} is a file, not a folder; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "" if existing == target else f" (to create {target})"
        raise ConfigError(f"{key}={typed or path}: cannot write in {existing}{what}; give a folder you can write to")


def writable_file(path: Any, key: str) -> None:
    """``key=file``: the folder it goes into must be writable (see writable_folder), and it must not be a folder."""
    from pathlib import Path

    p = Path(str(path)).expanduser()
    if p.is_dir():
        raise ConfigError(f"{key}={path} is a folder; give a file name")
    writable_folder(p.absolute().parent, key, typed=path)
