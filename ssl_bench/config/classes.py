"""Class lists (``dataset.classes``): which class folders of an image-folder dataset a run uses, read from an inline
list or a text file found on the config search path. Configuration validates them and the data layer selects
them with the same reader; pure Python, no torch."""

from __future__ import annotations

from pathlib import Path

from omegaconf import ListConfig

from ssl_bench.config.searchpath import ConfigGroupDir
from ssl_bench.errors import DataNotFound

CLASS_LISTS = ConfigGroupDir("dataset")  # ... and those in the user's config folders


def read_class_list(spec: str | list[str] | ListConfig) -> list[str]:
    """The class names of ``dataset.classes``: an inline list, or a text file with one name per line (blank
    lines and '#' comments skipped). A relative path is looked up in the working directory, then in dataset/ of
    the config folders: experiments/dataset/ where the committed lists live (imagenet100_classes.txt), and the
    user's ($SSL_BENCH_CONFIG_PATH)."""
    what = f"'{spec}'" if isinstance(spec, str) else "(the inline list)"
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.is_absolute() and not path.exists():
            path = CLASS_LISTS / spec
        if not path.is_file():
            raise DataNotFound(f"dataset.classes: no class list file '{spec}' (looked in the working directory "
                               f"and {CLASS_LISTS}); give a file with one class folder name per line")
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        names = [n for n in lines if n]
    else:
        names = [str(n).strip() for n in spec]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if not names or dupes or any(not n or "/" in n for n in names):
        why = f"duplicates {', '.join(dupes)}" if dupes else "empty or with a '/' in a name"
        raise DataNotFound(f"dataset.classes {what} is not a list of class folder names ({why})")
    return names
