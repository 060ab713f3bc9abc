"""MkDocs hook: the site shows the figures of results/ where they are, never copies of them in docs/.

A page links a figure by its path in the repository, relative to the page (``../results/reference/figures/x.png``
from ``docs/results.md``), so the link also works when the Markdown is read in the repository. At build time this
hook adds every figure under ``results/reference/figures/`` and ``results/health/figures/`` to the site as
``results/...`` (read from the results folder, so the site always shows what ``python -m ssl_bench.reference`` and
``scripts/health_evidence.sh`` last drew) and points the pages' links at those files. A link to a figure that does
not exist stays broken, and ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]  # the repository (docs/hooks/ -> docs/ -> root)
# The shipped reference figures and the guardrail evidence (scripts/health_evidence.sh).
FIGURES = (ROOT / "results" / "reference" / "figures", ROOT / "results" / "health" / "figures")
SUFFIXES = (".png", ".svg")


def on_files(files: Files, config) -> Files:
    for path in sorted(p for folder in FIGURES for p in folder.rglob("*")):
        if path.suffix in SUFFIXES and path.is_file():
            rel = path.relative_to(ROOT).as_posix()  # results/reference/figures/...: docs/results/... in the site
            files.append(File(rel, src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """``](../results/...`` (the repository's results/, seen from a page in docs/) -> ``](results/...``."""
    depth = page.file.src_uri.count("/")  # 0 for docs/<page>.md
    to_root, to_docs = "../" * (depth + 1), "../" * depth
    return re.sub(r"\]\(" + re.escape(to_root) + r"results/", "](" + to_docs + "results/", markdown)
