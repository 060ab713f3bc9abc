"""The documentation: README.md and the MkDocs site under docs/ (mkdocs.yml).

The site builds with ``mkdocs build --strict`` (a broken link or anchor, a missing figure, an API page whose module does
not load fails), the README's relative links point at files that exist, every ``ssl_bench.run`` command the README
and the docs show composes (its groups and keys are real, its values valid) and every ``accelerate launch`` they show
carries ``-q``, the configuration reference generated at build time has every key of the schema with a meaning, the
API reference renders its docstrings (no reStructuredText role left as text), and the example objective that
docs/adding-an-objective.md shows (examples/plugin_method) registers and runs with that page's commands. Commands
are read from ``bash`` code blocks only: ``text`` blocks hold the output the pages paste. Offline, CPU, about a minute.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The site's pages: docs/hooks/ is code, docs/snippets/ holds generated outputs the pages include (not pages).
PAGES = sorted(p for p in DOCS.rglob("*.md") if not {"hooks", "snippets"} & set(p.relative_to(DOCS).parts))
# The languages of the code blocks that hold commands a reader types (output is pasted in ``text`` blocks).
COMMAND_BLOCKS = ("bash", "sh", "shell", "console")
# Its commands run the example objective the page defines: checked with that objective registered, in a subprocess.
PLUGIN_PAGE = DOCS / "adding-an-objective.md"


def _fenced_lines(path: Path) -> list[str]:
    """The lines of a page's command blocks (```bash), with backslash continuations joined and comments dropped."""
    lines, inside, commands, pending = [], False, False, ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("```"):
            if not inside:
                commands = raw.strip()[3:].split(" ")[0].strip() in COMMAND_BLOCKS
            inside, pending = not inside, ""
            continue
        if not inside or not commands:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(re.split(r"\s+#", line, maxsplit=1)[0].strip())
    return lines


# What a command line adds before its own arguments; scripts/demo.sh runs the main job with the user's arguments after.
_RUN = re.compile(r"(?:-m ssl_bench\.run|\bssl-bench run)\s(.*)$")
_DEMO = re.compile(r"\bscripts/demo\.sh(?:\s(.*))?$")
_DEMO_ARGS = ["method=swav", "dataset=fashion_mnist", "budget=demo"]


def _run_overrides(line: str) -> list[str] | None:
    """The overrides of a run command in ``line`` (None if it runs none): placeholders (``<name>``, ``...``) and flags
    are left out; a grid (``-m a=x,y``) is checked at its first value."""
    if m := _RUN.search(line):
        prefix, rest = [], m.group(1)
    elif m := _DEMO.search(line):
        prefix, rest = list(_DEMO_ARGS), m.group(1) or ""
    else:
        return None
    tokens = shlex.split(rest)
    multirun = "-m" in tokens or "--multirun" in tokens
    out = []
    for tok in tokens:
        if "=" not in tok or tok.startswith(("-", "[")) or "<" in tok or ">" in tok or "..." in tok:
            continue
        if multirun and "," in tok and "[" not in tok and "(" not in tok:
            key, value = tok.split("=", 1)
            tok = f"{key}={value.split(',')[0]}"
        out.append(tok)
    return prefix + out


def _documented_runs(paths: list[Path]) -> list[tuple[str, list[str]]]:
    runs = []
    for path in paths:
        for line in _fenced_lines(path):
            overrides = _run_overrides(line)
            if overrides is not None:
                runs.append((f"{path.relative_to(ROOT)}: {line}", overrides))
    return runs


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for the tests below as the README says: ``mkdocs build --strict``, no warning."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings[python] is in the dev extra: pip install -e '.[dev]'")
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra: pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("SSL_BENCH_CONFIG_PATH", None)  # the reference documents the shipped configs
    out = tmp_path_factory.mktemp("docs") / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", ROOT / "mkdocs.yml",
                            "--site-dir", out], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = built.stdout + built.stderr
    assert built.returncode == 0, "mkdocs build --strict failed:\n" + log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    return out


def _html(site: Path, page: Path) -> Path:
    rel = page.relative_to(DOCS).with_suffix("")
    return site / (rel.parent if rel.name == "index" else rel) / "index.html"


def test_the_site_builds_strict(site):
    # Every page of docs/ is in the site, and the figures the pages show are the files of results/reference/figures/.
    for page in PAGES:
        assert _html(site, page).is_file(), f"{page.name} is not in the site (missing from the nav of mkdocs.yml?)"
    shown = re.findall(r"\]\((?:\.\./)+(results/[^)\s]+)\)", "".join(p.read_text() for p in PAGES))
    assert shown, "the docs show no figure of results/"
    for rel in shown:
        assert (site / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    # Generated files are shown as they are, never copied into a page: the claims report and the shipped tables.
    report = (site / "claims-report" / "index.html").read_text()
    first = (ROOT / "results" / "claims.md").read_text().splitlines()[0].lstrip("# ").strip()
    assert first.replace("'", "&#39;") in report or first in report, "results/claims.md is not in the site"
    results_page = (DOCS / "results.md").read_text()
    for table in sorted((ROOT / "results" / "reference" / "compare").glob("*/table.md")):
        assert f'--8<-- "{table.relative_to(ROOT).as_posix()}"' in results_page, f"{table} is not shown in results.md"


def _schema_keys() -> list[str]:
    """Every key of the run config's schema (the method section excepted), read from the dataclasses directly."""
    from omegaconf import OmegaConf

    from ssl_bench.config.schema import RunConfig

    def flatten(tree: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in tree.items():
            out += flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
        return out

    tree = OmegaConf.to_container(OmegaConf.structured(RunConfig), resolve=False)
    return [k for k in flatten(tree) if k != "method"]


def test_the_configuration_reference_has_every_schema_key(site):
    """docs/configuration.md's tables are generated from the schema at build time (docs/hooks/config_reference.py):
    every key of ssl_bench/config/schema.py and of every registered objective's dataclass is in the built page, with a
    meaning; the hook's fallback meanings name only keys that exist."""
    import dataclasses
    import html as html_lib

    from ssl_bench.config.registry import registry

    page = (site / "configuration" / "index.html").read_text()
    rows = {m[0]: html_lib.unescape(re.sub(r"<[^>]+>", "", m[1])).strip() for m in re.findall(
        r'<code id="([^"]+)">[^<]*</code></td>\s*<td>.*?</td>\s*<td>(.*?)</td>', page, re.S)}
    keys = {k: k for k in _schema_keys()}
    for name, entry in registry().items():
        keys.update({f"{name}.{f.name}": f"{name}:method.{f.name}" for f in dataclasses.fields(entry.config)
                     if f.name != "name"})
    assert len(keys) > 100, len(keys)
    missing = sorted(k for k in keys if k not in rows)
    assert not missing, f"keys missing from the configuration reference (docs/hooks/config_reference.py): {missing}"
    no_meaning = sorted(k for k in keys if len(rows[k]) < 10)
    assert not no_meaning, (f"keys without a meaning in the configuration reference: {no_meaning}; write a comment "
                            "above the field in ssl_bench/config/schema.py (or methods/<name>.py)")
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        import config_reference
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    stale = sorted(set(config_reference.MEANINGS) - set(keys.values()))
    assert not stale, f"MEANINGS in docs/hooks/config_reference.py names keys the schema no longer has: {stale}"


def test_the_api_reference_renders_the_public_surface(site):
    """The API page renders its modules with their docstrings as Markdown: no reStructuredText role left as text, the
    objective interface with its hooks and Context, the five objectives, compare's plan, and the Python API."""
    api = (site / "api" / "index.html").read_text()
    for name in ("ssl_bench.api.compose", "ssl_bench.api.run", "ssl_bench.records.io.load",
                 "ssl_bench.errors.ConfigError",
                 "ssl_bench.analysis.compare.plan", "ssl_bench.analysis.compare.Plan", "ssl_bench.methods.base.Context",
                 "ssl_bench.methods.base.Method.on_epoch_start", "ssl_bench.methods.base.Method.after_step",
                 "ssl_bench.methods.swav.SwAV", "ssl_bench.methods.carl.CARLConfig",
                 "ssl_bench.config.registry.register"):
        assert f'id="{name}"' in api, f"{name} is not in the API reference"
    text = re.sub(r"<[^>]+>", "", api)
    roles = re.findall(r":(?:func|class|meth|mod|attr|data|exc):`?\w", text)
    assert not roles, f"reStructuredText roles shown as text in the API reference: {roles[:5]}"
    assert "&gt;&gt;&gt;" not in re.sub(r'<div class="highlight">.*?</div>', "", api, flags=re.S), \
        "a doctest outside a code block"


def test_documented_accelerate_launches_are_quiet():
    """Every ``accelerate launch`` a reader is told to type carries ``-q``: a failing process then shows its own
    error, not the launcher's traceback around it."""
    loud = [f"{path.relative_to(ROOT)}: {line}" for path in [ROOT / "README.md", *PAGES]
            for line in _fenced_lines(path) if re.search(r"\baccelerate launch\b", line)
            and not re.search(r"\baccelerate launch (?:\S+ )*?(?:-q|--quiet)\b", line)]
    assert not loud, "accelerate launch without -q:\n" + "\n".join(loud)


def test_the_readme_links_exist():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links), "the README links into docs/"
    assert any(link.endswith(".png") for link in links), "the README shows a figure of shipped results"
    for link in links:
        if "://" in link or link.startswith("#"):
            continue
        target = ROOT / link.split("#")[0]
        assert target.exists(), f"README.md links to {link}, which does not exist"
    assert len(text.splitlines()) <= 220, "the README is the front page: details go to docs/"


def test_the_documented_commands_name_real_keys():
    """Every ``ssl_bench.run`` command in the README's and the docs' code blocks composes (groups, keys and values as
    ``python -m ssl_bench.run --cfg job`` would check them), so a renamed key cannot leave a stale example behind."""
    from ssl_bench import api
    from ssl_bench.errors import ConfigError

    runs = _documented_runs([ROOT / "README.md", *(p for p in PAGES if p != PLUGIN_PAGE)])
    assert len(runs) >= 5, runs
    assert any(o[:3] == _DEMO_ARGS for _, o in runs), "the demo command is documented"
    bad = []
    for where, overrides in runs:
        try:
            api.compose(overrides)
        except ConfigError as exc:
            bad.append(f"{where}\n    {exc}")
    assert not bad, "documented commands that do not compose:\n" + "\n".join(bad)


_EXAMPLE_CHECK = """
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import {module}
from ssl_bench import api
from ssl_bench.methods import build_method, registry
assert "{name}" in registry(), sorted(registry())
for overrides in json.loads(sys.argv[2]):
    cfg = api.compose(overrides)
    objective = build_method(cfg, cfg.head.out_dim)
    z = [torch.randn(8, cfg.head.out_dim, requires_grad=True) for _ in range(3)]
    loss, stats = objective(z)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(x.grad).all() for x in z), overrides
print("ok", len(json.loads(sys.argv[2])))
"""


def test_the_example_objective_is_shown_and_its_commands_compose(tmp_path):
    """The page on adding an objective shows the files of examples/plugin_method as they are (included at build time),
    and its run commands compose with that objective registered (imported from the example, in a subprocess: the
    registry of this process stays the shipped one) and build an objective whose loss is finite and reaches z."""
    example = ROOT / "examples" / "plugin_method"
    # The one entry point of its pyproject.toml (Python 3.10 has no tomllib): <name> = "<module>:<Class>".
    group = (example / "pyproject.toml").read_text().split('[project.entry-points."ssl_bench.methods"]')[1]
    name, module = re.search(r'^(\w+)\s*=\s*"([\w.]+):\w+"', group.strip(), re.M).groups()
    text = PLUGIN_PAGE.read_text()
    for shown in (f"{module}.py", "pyproject.toml"):
        assert f'--8<-- "examples/plugin_method/{shown}"' in text, f"the page shows examples/plugin_method/{shown}"
    runs = [o for _, o in _documented_runs([PLUGIN_PAGE])]
    assert runs and all(f"method={name}" in o for o in runs), runs
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    checked = subprocess.run([sys.executable, "-c", _EXAMPLE_CHECK.format(module=module, name=name), example,
                              json.dumps(runs)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-3000:]


# The pages whose every output is generated by a walkthrough of benchmarks.doc_outputs, with its name.
WALKTHROUGH_PAGES = [("tutorials/compare-on-a-slurm-cluster.md", "sl"), ("tutorials/imagenet-on-n-nodes.md", "in")]


@pytest.mark.parametrize(("page", "name"), WALKTHROUGH_PAGES)
def test_the_page_shows_the_commands_that_generated_its_outputs(page, name):
    """The page quotes outputs that benchmarks.doc_outputs generated by running its walkthrough: every command of that
    walkthrough is on the page as it ran (each line of a several-line one), every snippet it writes is included, and
    every ``text`` block of the page is such an include (no output typed or pasted)."""
    from benchmarks.doc_outputs import WALKTHROUGHS, Snippet

    page = DOCS / page
    text = page.read_text()
    shown = {" ".join(line.split()) for line in _fenced_lines(page)}
    (walk,) = [w for w in WALKTHROUGHS if w.name == name]
    for s in walk.snippets:
        if not isinstance(s, Snippet):
            continue
        if re.search(r"\s", s.command.strip()):  # a command (a path alone is a file the page shows)
            for line in s.command.strip().split("\n"):
                assert " ".join(line.split()) in shown, f"not on the page as it ran: {line}"
        if s.name:
            assert f'--8<-- "docs/snippets/{s.name}"' in text, s.name
            assert (DOCS / "snippets" / s.name).is_file(), s.name
    pasted = [block for block in re.findall(r"^```text\n(.*?)^```", text, re.S | re.M)
              if not re.fullmatch(r'--8<-- "docs/snippets/[^"]+"\n', block)]
    assert not pasted, f"{page.name} shows output that no walkthrough generated:\n" + "\n".join(pasted)


def test_the_imagenet_stand_in_runs_the_lines_the_launcher_printed():
    """The 2-node stand-in of the ImageNet tutorial runs the two ``accelerate launch`` lines that ``ssl_bench.launch``
    printed just above it (its generated snippet), and the page names the step the test hook stops the run at."""
    from benchmarks.doc_outputs import IN_PAUSE_STEP, IN_TWO_NODES

    printed = (DOCS / "snippets" / "in-launch-2x1.txt").read_text().splitlines()
    launched = [line.split(" > ")[0].rstrip(" &") for line in IN_TWO_NODES.split("\n") if "accelerate launch" in line]
    assert len(launched) == 2 and all(line in printed for line in launched), launched
    assert f"step {IN_PAUSE_STEP} " in (DOCS / "tutorials" / "imagenet-on-n-nodes.md").read_text()
