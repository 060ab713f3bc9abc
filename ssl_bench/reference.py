"""Entry point: regenerate every shipped table and figure from the shipped records, or check them.

    python -m ssl_bench.reference            # rewrite results/reference/{compare,figures} from its runs/
    python -m ssl_bench.reference check=true # regenerate into a temporary folder; exit 1 if a table differs
    python -m ssl_bench.reference verify     # retrain each record's first epoch; exit 1 if today's code differs
    python -m ssl_bench.reference pending    # the runs the shipped tables and claims still need, one a line
    python -m ssl_bench.reference retrain    # retrain records' whole runs, compare every number
    (ssl_bench.analysis.retrain)

Regenerating and checking include results/claims.md (ssl_bench.claims: the papers' claims, from the claim
studies' records).

The shipped records live in ``results/reference/`` (``runs/`` the run records, ``sweeps/`` the sweep
studies), apart from a user's own ``results/runs``, so a user's run never overwrites them. What is generated
from them is listed in ``results/reference/manifest.yaml``: the comparisons (``ssl_bench.analysis.compare``
arguments, tabulated from the records without training), the plot reports (``ssl_bench.plot`` arguments) and
the sweep reports (study names). The tables (``*.md``, ``*.csv``) must equal the committed ones exactly; the
test suite runs the check.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ssl_bench.analysis.claims import OUT as CLAIMS_OUT
from ssl_bench.analysis.claims import ROOT
from ssl_bench.analysis.claims import check as claims_check
from ssl_bench.analysis.claims import write as write_claims
from ssl_bench.config.cli import guarded, leave
from ssl_bench.config.compose import ConfigError
from ssl_bench.config.overrides import Command, Key, help_requested
from ssl_bench.records.io import REFERENCE_DIR, read_json
from ssl_bench.records.layout import ResultsLayout

README = ROOT / "README.md"  # its block between the headline's markers is rewritten by the regeneration


def manifest(ref: Path = REFERENCE_DIR) -> dict[str, Any]:
    path = ref / "manifest.yaml"
    if not path.exists():
        raise ConfigError(f"no {path}: nothing to regenerate")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"compare", "plot", "sweep"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}; valid: compare, plot, sweep")
    return data


def regenerate(out: Path, ref: Path = REFERENCE_DIR, readme: Path | None = None) -> list[Path]:
    """Write every table and figure of the manifest under ``out`` (``compare/``, ``figures/``) from the records
    in ``ref``, and the headline (``headline.md``: ssl_bench.analysis.headline) from the same tables, the claims
    evaluated on ``ref`` and its verification ledger; with ``readme``, rewrite that file's generated block too.
    Returns the files written. Nothing is trained: a missing record is a ConfigError."""
    return _regenerate_all(out, ref, readme)[0]


def _regenerate_all(out: Path, ref: Path, readme: Path | None) -> tuple[list[Path], list[Any], str]:
    """regenerate(), also returning the evaluated claims (for claims.md) and the headline's text."""
    from ssl_bench.analysis import headline as hl
    from ssl_bench.analysis.claims import evaluate_all

    data = manifest(ref)
    out, ref = Path(out).resolve(), Path(ref).resolve()
    # Records are found, and named in runs.csv, relative to the checkout, so tables do not depend on where it is.
    rel = ref.relative_to(ROOT) if ref.is_relative_to(ROOT) else ref
    here = Path.cwd()
    os.chdir(ROOT)
    try:
        written, tables = _regenerate(data, out, ref, rel)
        evs = evaluate_all(ref)
    finally:
        os.chdir(here)
    text = hl.headline(tables, evs, ref)
    out.mkdir(parents=True, exist_ok=True)
    (out / hl.NAME).write_text(text)
    written.append(out / hl.NAME)
    if readme is not None:
        readme.write_text(hl.with_block(readme.read_text(), text))
        written.append(readme)
    return written, evs, text


def _regenerate(data: dict[str, Any], out: Path, ref: Path, rel: Path
                ) -> tuple[list[Path], list[tuple[str, Any, Path]]]:
    import optuna

    from ssl_bench.analysis import compare as cmp
    from ssl_bench.analysis.plot import plot
    from ssl_bench.sweep import META
    from ssl_bench.sweep.plots import write_report

    written: list[Path] = []
    tables = []
    for argv in data.get("compare") or []:
        plan = cmp.plan(**{**cmp.plan_arguments(argv)[0], "results": rel})  # the manifest lists command lines
        plan = dataclasses.replace(plan, out_dir=ResultsLayout(out).compare(plan.name))
        table = cmp.compare(plan, train=False, verbose=False)
        tables.append((plan.name, table, plan.out_dir / "runs.csv"))
        written += sorted(plan.out_dir.iterdir())
    for argv in data.get("plot") or []:
        own = dict(a.split("=", 1) for a in argv)
        study = own.get("study")
        written += plot(rel, study, ResultsLayout(out).figures(study), own.get("sweeps", "false") == "true",
                        compare_dir=ResultsLayout(out).compare())
    for name in data.get("sweep") or []:
        storage = f"sqlite:///{ResultsLayout(ref).sweep_db(name).resolve()}"
        study = optuna.load_study(study_name=name, storage=storage)
        report = write_report(study, study.user_attrs.get(META, {}), ResultsLayout(out).figures(name),
                              runs_dir=ResultsLayout(rel).runs)
        written += [p for p in report.values() if isinstance(p, Path)]
        print(f"sweep report: {ResultsLayout(out).figures(name)}")
    return written, tables


def stale_records(ref: Path = REFERENCE_DIR) -> dict[str, str]:
    """Shipped records the verification ledger marks stale (or whose config no longer composes the same)."""
    from ssl_bench.analysis.cells import STALE_STATES

    p = ResultsLayout(ref).ledger
    entries = read_json(p).get("records", {}) if p.exists() else {}
    return {k: v.get("why", "") for k, v in entries.items()
            if v.get("status") in STALE_STATES and (ResultsLayout(ref).run(k) / "summary.json").exists()}


def check(ref: Path = REFERENCE_DIR) -> list[str]:
    """Regenerate into a temporary folder; the tables (*.md, *.csv) that differ from the committed ones, or are
    missing on either side."""
    from ssl_bench.analysis.headline import readme_problem

    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp)
        _, evs, headline = _regenerate_all(new, ref, None)
        problems = []
        tables = sorted(p.relative_to(new) for p in new.rglob("*") if p.suffix in (".md", ".csv"))
        for t in tables:
            if not (ref / t).exists():
                problems.append(f"{t}: not committed")
            elif not filecmp.cmp(new / t, ref / t, shallow=False):
                problems.append(f"{t}: differs from the committed file")
        for sub in (ResultsLayout(ref).compare(), ResultsLayout(ref).figures()):
            for p in sorted(sub.rglob("*")):
                if p.suffix in (".md", ".csv") and p.relative_to(ref) not in tables:
                    problems.append(f"{p.relative_to(ref)}: committed but no longer generated")
        if ref.resolve() == REFERENCE_DIR.resolve():
            if not claims_check(evs):
                problems.append("results/claims.md: differs from the records (python -m ssl_bench.claims)")
            if readme_problem(README, headline):
                problems.append(readme_problem(README, headline))
        for name, why in stale_records(ref).items():
            problems.append(f"runs/{name}: today's code does not reproduce it ({why}); retrain it")
        return problems


COMMAND = Command(
    "ssl_bench.reference", __doc__.split("\n\nThe shipped")[0],
    (Key("check", "bool", False, "regenerate into a temporary folder and compare; exit 1 if a table differs"),
     Key("out", "str", None, "where to regenerate (null: results/reference)")),
    footer="The shipped" + __doc__.split("\n\nThe shipped", 1)[1])


def pending(ref: Path = REFERENCE_DIR) -> list[tuple[str, list[str]]]:
    """The runs the shipped tables and claims still need, pilot seeds first: (why, the run's overrides) for each
    planned run without a record or with a stale one. Designs (seeds=auto) are read from the pilots' records, so
    running this again after the pilots finish lists the seeds they ask for."""
    from ssl_bench.analysis import claims as cl
    from ssl_bench.analysis import compare as cmp

    rel = ref.relative_to(ROOT) if ref.is_relative_to(ROOT) else ref
    plans = []
    for argv in manifest(ref).get("compare") or []:
        plan = cmp.plan(**{**cmp.plan_arguments(argv)[0], "results": rel})
        if plan.auto:
            n, _ = cmp.auto_seeds(plan)
            plan = cmp.with_seeds(plan, [*plan.seeds, *range(max(plan.seeds) + 1, max(plan.seeds) + 1 + n -
                                                             len(plan.seeds))])
        plans.append((plan, None))
    data = cl.read_claims()
    common = [str(x) for x in data.get("common") or []]
    for claim in data.get("claims") or []:
        seeds, _ = cl.design(claim, data, ref)
        plan = cmp.plan(study=claim["study"], overrides=common, seeds=seeds, results=rel)
        plans.append((plan, cl.claim_variants(claim["test"])))
    stale = stale_records(ref)
    out: dict[str, tuple[int, str, list[str]]] = {}
    for plan, variants in plans:
        for r in plan.runs:
            if variants is not None and r.variant not in variants:
                continue
            d = ROOT / r.run_dir if not r.run_dir.is_absolute() else r.run_dir
            why = ("stale: " + stale[d.name]) if d.name in stale else (
                "" if (d / "summary.json").exists() else "interrupted" if (d / "checkpoint").exists() else "missing")
            if why:
                overrides = last_wins([o for o in r.cfg.overrides if not o.startswith("output_dir=")])
                out.setdefault(d.name, (r.seed, why, overrides + (["overwrite=true"] if why.startswith("stale")
                                                                  else [])))
    return [(why, o) for _, why, o in sorted(out.values(), key=lambda x: x[0])]


def last_wins(overrides: list[str]) -> list[str]:
    """``overrides`` with each key once, at its last value (what the run composed: later overrides win), so a
    printed command reads as the run it stands for."""
    last = {o.partition("=")[0].lstrip("+~"): i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[o.partition("=")[0].lstrip("+~")] == i]


VERIFY = Command(
    "ssl_bench.reference verify", "Retrain the first epoch of shipped records at their seeds and compare the logged "
    "numbers (ssl_bench.analysis.verify); the verdicts go to results/reference/verification.json.\n\n"
    "    python -m ssl_bench.reference verify [sample=all|ci] [runs=[name,...]] [threads=N]",
    (Key("sample", "str", "all", "all: every record; ci: one record per method (the budget as defined, lowest "
         "seed), as the test suite checks", ("all", "ci")),
     Key("runs", "list[str]", None, "only these run folders (names under results/reference/runs)"),
     Key("threads", "int", None, "torch threads (null: each record's own, for an exact comparison; another count "
         "compares with a tolerance)"),
     Key("write", "bool", True, "record each verdict in verification.json")),
    footer="Exit 1 when today's code does not reproduce a record, naming the records to retrain. Equal numbers are "
           "required on a CPU with the record's thread count, torch and CPU kernel path (ssl_bench.common.kernels: the "
           "instruction set the arithmetic libraries use); elsewhere the numbers must agree within the spread "
           "measured over kernel paths (ssl_bench.analysis.verify.SPREAD), reported as approximate. Writing the "
           "ledger needs "
           "committed training code: each entry names the commit it was checked at.")


def verify_main(argv: list[str]) -> int:
    from ssl_bench.analysis import verify
    from ssl_bench.records.io import record_dirs

    if help_requested(argv):
        print(VERIFY.help())
        return 0
    own, _, _ = VERIFY.parse(argv)
    runs = record_dirs(ResultsLayout(REFERENCE_DIR).runs)
    if own["runs"]:
        names = {d.name: d for d in runs}
        unknown = [n for n in own["runs"] if n not in names]
        if unknown:
            raise ConfigError(f"runs: no record '{unknown[0]}' under {ResultsLayout(REFERENCE_DIR).runs}")
        runs = [names[n] for n in own["runs"]]
    elif own["sample"] not in VERIFY.keys[0].choices:
        raise ConfigError(f"sample={own['sample']}; valid choices: {', '.join(VERIFY.keys[0].choices)}")
    elif own["sample"] == "ci":
        runs = verify.sample(runs)
    checks = verify.verify(REFERENCE_DIR, runs, own["threads"], write=own["write"])
    for line in verify.summary_lines(checks):
        print(line)
    print(verify.coverage_line(REFERENCE_DIR))
    return 1 if any(c.status in (verify.STALE, verify.CONFIG_CHANGED) for c in checks) else 0


RETRAIN = Command(
    "ssl_bench.reference retrain", "Retrain shipped records' whole runs at today's code and compare every number "
    "(ssl_bench.analysis.retrain); each result goes to <record>/retrain.json, and an equal record gets the new run's "
    "predictions.npz.\n\n"
    "    python -m ssl_bench.reference retrain [runs=[name,...]] [set=table|claims|all] [scratch=DIR] [list=true]",
    (Key("runs", "list[str]", None, "only these run folders (names under results/reference/runs)"),
     Key("set", "str", "table", "table: the five-method table's records; claims: the claims'; all: every record",
         ("table", "claims", "all")),
     Key("scratch", "str", None, "where the new records are trained, <scratch>/<commit>/runs (null: results/retrain "
         "of this checkout, untracked); keep it outside git"),
     Key("list", "bool", False, "print the selected records' names, one a line, and stop")),
    footer="Exit 1 when a record's numbers differ (a finding: the shipped record is left untouched, the new one kept "
           "in scratch) or it could not be retrained. Needs committed training code; records already equal at this "
           "commit are skipped and an interrupted retrain continues from its checkpoint, so running it again resumes. "
           "Equality is 'exact' on the record's kernel path, threads and torch, 'approximate' where the record names "
           "no kernel path. One demo record takes about as long as it took to train (summary.json cost.wall_s).")


def retrain_main(argv: list[str]) -> int:
    from ssl_bench.analysis import retrain

    if help_requested(argv):
        print(RETRAIN.help())
        return 0
    own, _, _ = RETRAIN.parse(argv)
    if own["runs"]:
        names = {d.name: d for d in retrain.record_set("all", REFERENCE_DIR)}
        unknown = [n for n in own["runs"] if n not in names]
        if unknown:
            raise ConfigError(f"runs: no record '{unknown[0]}' under {ResultsLayout(REFERENCE_DIR).runs}")
        runs = [names[n] for n in own["runs"]]
    else:
        runs = retrain.record_set(own["set"], REFERENCE_DIR)
    if own["list"]:
        print("\n".join(d.name for d in runs))
        return 0
    results = retrain.retrain(REFERENCE_DIR, runs, Path(own["scratch"] or ROOT / "results" / "retrain"))
    print(retrain.summary_line(results))
    return 1 if any(r.status != retrain.EQUAL for r in results) else 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "verify":
        return verify_main(argv[1:])
    if argv and argv[0] == "retrain":
        return retrain_main(argv[1:])
    if argv and argv[0] == "pending":  # one run a line: its overrides, then '# why'
        for why, overrides in pending():
            print(" ".join(overrides) + f"  # {why}")
        return 0
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
    shipped = out.resolve() == REFERENCE_DIR.resolve()
    written, evs, _ = _regenerate_all(out, REFERENCE_DIR, README if shipped and README.exists() else None)
    for p in written:
        print(p)
    claims_out = CLAIMS_OUT if shipped else out / "claims.md"
    write_claims(claims_out, figures=ResultsLayout(out).figures("claims"), evs=evs)
    print(claims_out)
    return 0


if __name__ == "__main__":
    leave(guarded(main))
