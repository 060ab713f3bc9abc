"""Progress bars for everything a person waits on (training, feature extraction, probes, memory-bank passes).

One helper, :func:`bar`, used everywhere: a real tqdm bar only on the main process, with ``train.progress`` on,
and when stderr is a terminal (or a notebook); otherwise a disabled tqdm, which iterates and counts but writes
nothing, so logs redirected to a file get no carriage-return spam (the per-epoch summary line is the log).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_enabled = True  # train.progress of the run in this process (set by configure)


def configure(enabled: bool) -> None:
    """Turn bars on or off for this process (``train.progress``); the terminal and rank checks still apply."""
    global _enabled
    _enabled = bool(enabled)


def shown() -> bool:
    """Whether bars are drawn here: asked for, on the main process, and someone can see them."""
    if not _enabled or int(os.environ.get("RANK", "0")) != 0:
        return False
    stream = sys.stderr
    attended = stream is not None and hasattr(stream, "isatty") and stream.isatty()
    return attended or "ipykernel" in sys.modules  # a notebook's stderr is no tty, but tqdm.auto draws a widget


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
        unit: str = "it", initial: int = 0, leave: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar, or a disabled one (same interface, no output) where :func:`shown` says no."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, dynamic_ncols=True,
                disable=not shown(), **kwargs)
