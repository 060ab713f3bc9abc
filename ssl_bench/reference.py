"""Entry point: regenerate every shipped table and figure from the shipped records, or check them.

    python -m ssl_bench.reference            # rewrite results/reference/{compare,figures} from its runs/
    python -m ssl_bench.reference check=true # regenerate into a temporary folder; exit 1 if a table differs

Both include results/claims.md (ssl_bench.claims: the papers' claims, from the claim studies' records).

The shipped records live in ``results/reference/`` (``runs/`` the run records, ``sweeps/`` the sweep
studies), apart from a user's own ``results/runs``, so a user's run never overwrites them. What is generated
from them is listed in ``results/reference/manifest.yaml``: the comparisons (``ssl_bench.compare``
arguments, tabulated from the records without training), the plot reports (``ssl_bench.plot`` arguments) and
the sweep reports (study names). The tables (``*.md``, ``*.csv``) must equal the committed ones exactly; the
test suite runs the check.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ssl_bench.claims import OUT as CLAIMS_OUT
from ssl_bench.claims import check as claims_check
from ssl_bench.claims import write as write_claims
from ssl_bench.cli import guarded
from ssl_bench.config import ConfigError
from ssl_bench.overrides import Command, Key, help_requested
from ssl_bench.results import REFERENCE_DIR

ROOT = REFERENCE_DIR.parent.parent


def manifest(ref: Path = REFERENCE_DIR) -> dict[str, Any]:
    path = ref / "manifest.yaml"
    if not path.exists():
        raise ConfigError(f"no {path}: nothing to regenerate")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"compare", "plot", "sweep"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}; valid: compare, plot, sweep")
    return data


def regenerate(out: Path, ref: Path = REFERENCE_DIR) -> list[Path]:
    """Write every table and figure of the manifest under ``out`` (``compare/``, ``figures/``) from the records
    in ``ref``; returns the files written. Nothing is trained: a missing record is a ConfigError."""
    data = manifest(ref)
    out, ref = Path(out).resolve(), Path(ref).resolve()
    # Records are found, and named in runs.csv, relative to the checkout, so tables do not depend on where it is.
    rel = ref.relative_to(ROOT) if ref.is_relative_to(ROOT) else ref
    here = Path.cwd()
    os.chdir(ROOT)
    try:
        return _regenerate(data, out, ref, rel)
    finally:
        os.chdir(here)


def _regenerate(data: dict[str, Any], out: Path, ref: Path, rel: Path) -> list[Path]:
    import optuna

    from ssl_bench import compare as cmp
    from ssl_bench.plot import plot
    from ssl_bench.sweep import META
    from ssl_bench.sweep.plots import write_report

    written: list[Path] = []
    for argv in data.get("compare") or []:
        plan = cmp.parse([*argv, f"results={rel}"])
        plan = dataclasses.replace(plan, out_dir=out / "compare" / plan.name)
        cmp.compare(plan, train=False, verbose=False)
        written += sorted(plan.out_dir.iterdir())
    for argv in data.get("plot") or []:
        own = dict(a.split("=", 1) for a in argv)
        study = own.get("study")
        written += plot(rel, study, out / "figures" / (study or ""), own.get("sweeps", "false") == "true",
                        compare_dir=out / "compare")
    for name in data.get("sweep") or []:
        storage = f"sqlite:///{(ref / 'sweeps' / f'{name}.db').resolve()}"
        study = optuna.load_study(study_name=name, storage=storage)
        report = write_report(study, study.user_attrs.get(META, {}), out / "figures" / name, runs_dir=rel / "runs")
        written += [p for p in report.values() if isinstance(p, Path)]
        print(f"sweep report: {out / 'figures' / name}")
    return written


def check(ref: Path = REFERENCE_DIR) -> list[str]:
    """Regenerate into a temporary folder; the tables (*.md, *.csv) that differ from the committed ones, or are
    missing on either side."""
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp)
        regenerate(new, ref)
        problems = []
        tables = sorted(p.relative_to(new) for p in new.rglob("*") if p.suffix in (".md", ".csv"))
        for t in tables:
            if not (ref / t).exists():
                problems.append(f"{t}: not committed")
            elif not filecmp.cmp(new / t, ref / t, shallow=False):
                problems.append(f"{t}: differs from the committed file")
        for sub in ("compare", "figures"):
            for p in sorted((ref / sub).rglob("*")):
                if p.suffix in (".md", ".csv") and p.relative_to(ref) not in tables:
                    problems.append(f"{p.relative_to(ref)}: committed but no longer generated")
        if ref.resolve() == REFERENCE_DIR.resolve() and not claims_check():
            problems.append("results/claims.md: differs from the records (python -m ssl_bench.claims)")
        return problems


COMMAND = Command(
    "ssl_bench.reference", __doc__.split("\n\nThe shipped")[0],
    (Key("check", "bool", False, "regenerate into a temporary folder and compare; exit 1 if a table differs"),
     Key("out", "str", None, "where to regenerate (null: results/reference)")),
    footer=__doc__.split("\n\n", 2)[2])


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    own, _, _ = COMMAND.parse(argv)
    if own["check"]:
        problems = check()
        for p in problems:
            print(p)
        print("reference tables: " + ("all equal to the committed ones" if not problems else f"{len(problems)} differ"))
        return 1 if problems else 0
    out = Path(own["out"] or REFERENCE_DIR)
    for p in regenerate(out):
        print(p)
    shipped = out.resolve() == REFERENCE_DIR.resolve()
    claims_out = CLAIMS_OUT if shipped else out / "claims.md"
    write_claims(claims_out, figures=out / "figures" / "claims")
    print(claims_out)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
