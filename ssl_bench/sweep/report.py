"""The end of a study: the best trial on the terminal, the table and figures under <results>/figures/<study>/."""

from __future__ import annotations

import fcntl
from typing import Any

import optuna

from ssl_bench.config.compose import ConfigError
from ssl_bench.records.layout import ResultsLayout
from ssl_bench.sweep.spec import default_storage, fmt_value, safe_name
from ssl_bench.sweep.storage import IDLE, META, make_storage, redact


def summarize(study: optuna.Study, meta: dict[str, Any], results: ResultsLayout, storage: str,
              plot_params: list[str] | None = None) -> None:
    """Print the best trial and write the table and figures (``figures/<study>/`` of ``results``)."""
    from ssl_bench.sweep.plots import write_report

    States = optuna.trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("fail_kind") != IDLE]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in States}
    print(f"study {study.study_name}: {len(trials)} trials (" + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + ")")
    if counts["complete"]:
        best = study.best_trial
        print(f"highest {meta.get('objective', 'value')}: trial {best.number}, {best.value:.4g}, params "
              + " ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items())
              + " (one trial per point is one seed: see the figures' n before calling it best)")
    retried = sum("retry_of" in t.user_attrs for t in trials)
    if retried:
        print(f"  {retried} trial(s) retried a trial whose worker died or was stopped")
    out_dir = results.figures(safe_name(study.study_name))
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "a") as lock:  # workers of one machine finishing together write one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        paths = write_report(study, meta, out_dir, plot_params, runs_dir=results.runs)
    for what, path in paths.items():
        print(f"  {what}: {path}")
    if storage.startswith(("sqlite", "postgresql", "mysql")):
        print(f"  dashboard: optuna-dashboard {redact(storage)}")


def report_only(own: dict[str, Any]) -> int:
    """n_trials=0 study_name=<name> without sweep=: report from the study's storage alone."""
    results = ResultsLayout(own.get("results", "results"))
    storage = own.get("storage") or default_storage(results, own["study_name"])
    try:
        study = optuna.load_study(study_name=own["study_name"], storage=make_storage(storage))
    except KeyError:
        raise ConfigError(f"no study '{own['study_name']}' in {redact(storage)}") from None
    plot = own.get("plot_params")
    summarize(study, study.user_attrs.get(META, {}), results, storage, plot)
    return 0

