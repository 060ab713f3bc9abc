"""The results folder's layout, in one place: every module asks a :class:`ResultsLayout` for a path.

    <root>/runs/<run_id>/            run records (a run's output_dir is <root>/runs; sweep trials too)
    <root>/compare/<name>/           a comparison's tables (ssl_bench.compare)
    <root>/figures/[<name>/]         plot reports, sweep reports, claim figures
    <root>/sweeps/<study>.db         sweep storage; sweeps/locks/ the per-point locks of grid workers
    <root>/baselines/                cached random-init floors, shared by the runs beside them
    <root>/splits/<dataset>/         semi-supervised label splits
    <root>/verification.json         the verify ledger (results/reference)

Which folders hold the runs a reader reads is decided here too (:func:`records_folder`): a results root's runs/ and
nothing else under it, so the shipped records (results/reference/runs) are read only when named and the copies
other folders keep beside them (results/health/runs) never pool with anyone's runs.

A leaf module (pathlib only): the cheap readers (cells, results) use it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LEDGER = "verification.json"  # ssl_bench.analysis.verify writes it, ssl_bench.analysis.cells reads it
# Sub-folders of a results root that are not its runs: reading a root never descends into them.
NOT_RUNS = ("reference", "health", "compare", "figures", "sweeps", "baselines", "splits")


@dataclass(frozen=True)
class ResultsLayout:
    """The folders under one results root (``results``, ``results/reference`` or a test's tmp_path)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def of_runs(cls, runs_dir: str | Path) -> ResultsLayout:
        """The layout whose runs folder is ``runs_dir`` (a run config's output_dir)."""
        return cls(Path(runs_dir).parent)

    @classmethod
    def of_run(cls, run_dir: str | Path) -> ResultsLayout:
        """The layout holding the run folder ``run_dir`` (``<root>/runs/<run_id>``)."""
        return cls.of_runs(Path(run_dir).parent)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, run_id: str) -> Path:
        return self.runs / run_id

    def compare(self, name: str | None = None) -> Path:
        """``compare/<name>``, or the folder of every comparison without a name."""
        return self.root / "compare" / name if name else self.root / "compare"

    def figures(self, *parts: str | None) -> Path:
        """``figures/`` or a report's folder under it (empty or None parts are skipped: ``figures(study)``)."""
        return self.root.joinpath("figures", *(p for p in parts if p))

    @property
    def sweeps(self) -> Path:
        return self.root / "sweeps"

    def sweep_db(self, study: str) -> Path:
        """The default SQLite storage of a sweep study (``study`` already a safe file name)."""
        return self.sweeps / f"{study}.db"

    def sweep_lock(self, run_id: str) -> Path:
        return self.sweeps / "locks" / f"{run_id}.lock"

    @property
    def baselines(self) -> Path:
        return self.root / "baselines"

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER


def records_folder(path: str | Path) -> Path:
    """The folder whose run records a reader of ``path`` reads: a run folder or a folder of runs as given; a results
    root (a folder with runs/, or with any of NOT_RUNS) its runs/ only, which need not exist yet."""
    p = Path(path)
    if (p / "summary.json").exists():
        return p
    layout = ResultsLayout(p)
    if layout.runs.is_dir() or any((p / name).is_dir() for name in NOT_RUNS):
        return layout.runs
    return p


def shipped_runs(results: str | Path) -> Path | None:
    """``<results>/reference/runs`` when it holds records (the shipped ones beside a user's results root), else None."""
    ref = ResultsLayout(Path(results) / "reference").runs
    return ref if ref.is_dir() and any(ref.glob("*/summary.json")) else None
