"""Run folders skipped by this command because their record cannot be read (see errors.UnreadableRecord).

A results folder of hundreds of runs outlives copies cut short and killed jobs; one damaged record must not take
the others down. Readers call :func:`skip` for such a folder: it prints one warning line per folder (naming the file
and what is wrong) and remembers it, so a table can say how many runs it left out (:func:`note`). With strict
mode on (``strict=true`` of any command, or ``check=true`` of reference/claims) :func:`skip` raises instead,
which the entry points print as one ``error:`` line, exit 2. A leaf module: the command-line parser sets the mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ssl_bench.errors import UnreadableRecord

_state: dict[str, object] = {"strict": False, "skipped": {}}


def reset(strict: bool = False) -> None:
    """A new command: nothing skipped yet; strict or not."""
    _state["strict"] = strict
    _state["skipped"] = {}


def set_strict(on: bool = True) -> None:
    if on:  # sticky within a command: reference's check=true parses compare's arguments after its own
        _state["strict"] = True


def strict() -> bool:
    return bool(_state["strict"])


def skip(run: str | Path, exc: UnreadableRecord) -> None:
    """Leave ``run`` out of what is being read: one warning line (once per folder), or raise in strict mode."""
    if strict():
        raise exc
    skipped: dict[str, str] = _state["skipped"]  # type: ignore[assignment]
    key = str(Path(run).resolve())  # one folder, however a reader named it (relative, absolute)
    if key not in skipped:
        skipped[key] = str(exc)
        print(f"warning: skipped {exc} (strict=true makes this an error)", file=sys.stderr)


def skipped() -> dict[str, str]:
    """Folder -> what is wrong, for every run skipped so far by this command."""
    return dict(_state["skipped"])  # type: ignore[arg-type]


def note(paths: list[str] | None = None) -> str:
    """A line for a table: how many runs were skipped (all of this command's, or those under ``paths``); '' if
    none."""
    runs = sorted(skipped())
    if paths is not None:
        runs = [r for r in runs if any(Path(r).is_relative_to(Path(p).resolve()) for p in paths)]
    if not runs:
        return ""
    names = ", ".join(Path(r).name for r in runs)
    return (f"\n{len(runs)} run(s) skipped: their record cannot be read ({names}); the warnings say what is wrong, "
            "strict=true makes it an error.\n")
