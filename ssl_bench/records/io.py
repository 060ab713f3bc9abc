"""Result records: one folder per run under results/runs/<run_id>/.

    config.yaml      the resolved config
    metrics.jsonl    one JSON line per finished epoch
    baseline.json    the kNN of the randomly initialised backbone (before training)
    predictions.npz  the final evaluation's predicted class of every test image, kNN and linear probe, one row
                     per evaluation seed, with the labels (ssl_bench.evaluation.predictions; read_predictions)
    summary.json     method, dataset, budget, seed, epochs, metrics.*, cost.*, versions (written last)

Every file is written to a temporary name and renamed, so a reader never sees half a file and a crash
never loses what was already written. ``load(path)`` returns every finished run as one DataFrame with its
configuration (``config.*`` columns, the ``configuration`` label and ``configuration_id``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, open_dict

from ssl_bench.common import skipped
from ssl_bench.config.compose import ConfigError
from ssl_bench.config.schema import KNN_K
from ssl_bench.errors import UnreadableRecord, WriteFailed
from ssl_bench.records.identity import configuration_id, differences, run_id, run_name
from ssl_bench.records.labels import crops_label, label
from ssl_bench.records.layout import ResultsLayout, records_folder, shipped_runs


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write ``path`` whole or not at all (temporary file + rename). A failure of the disk (full, quota, read-only)
    is WriteFailed, one line naming the path; the temporary file is removed and an older ``path`` is kept."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteFailed(f"cannot write {path}: {os_error(exc)}") from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def os_error(exc: OSError) -> str:
    """'[Errno 28] No space left on device' without the file name the message already has."""
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None and exc.strerror else str(exc)


def save_figure(fig: Any, path: str | Path, **kw: Any) -> Path:
    """``fig.savefig(path, **kw)`` written atomically (a full disk leaves no half figure; WriteFailed)."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=kw.pop("format", path.suffix.lstrip(".") or "png"), **kw)
    write_atomic(path, buf.getvalue())
    return path


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise UnreadableRecord(path, f"not text (byte {exc.start} is not UTF-8): damaged") from None
    except OSError as exc:
        raise UnreadableRecord(path, f"cannot be read: {os_error(exc)}") from None


def read_json(path: str | Path) -> Any:
    """A JSON file; one that is cut short or not JSON is UnreadableRecord (one line naming it)."""
    path = Path(path)
    text = _text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = " (cut short?)" if not text.rstrip().endswith(("}", "]")) else ""
        raise UnreadableRecord(path, f"not valid JSON{cut}: {exc.msg} at line {exc.lineno} column {exc.colno}"
                               ) from None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl's rows (one per finished epoch); a line that is not a JSON object is UnreadableRecord."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    lines = [line for line in _text(p).splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or "epoch" not in row:
            where = "the last line" if i == len(lines) else f"line {i}"
            raise UnreadableRecord(p, f"{where} (of {len(lines)}) is not a JSON epoch row (cut short?)")
        rows.append(row)
    return rows


def read_predictions(run_dir: str | Path) -> dict[str, Any] | None:
    """A record's per-test-image predictions (predictions.npz: ``seeds``, ``index``, ``labels``, ``knn``,
    ``linear``, ``knn_k``; see ssl_bench.evaluation.predictions) as numpy arrays, or None for a record without
    them (written before records kept them). A damaged file is UnreadableRecord."""
    import zipfile

    import numpy as np

    path = Path(run_dir) / "predictions.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UnreadableRecord(path, f"not a readable .npz (cut short?): {exc}") from None


def write_metrics(run_dir: str | Path, rows: list[dict]) -> None:
    write_atomic(Path(run_dir) / "metrics.jsonl",
                 "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in rows))


# The records the project ships (the comparisons it publishes), apart from a user's own results/runs.
# SSL_BENCH_REFERENCE=<checkout>/results/reference points reference and claims at a copy (tests damage copies,
# never the shipped records); claims.md is then written two folders above it.
REFERENCE_ENV = "SSL_BENCH_REFERENCE"
REFERENCE_DIR = Path(os.environ.get(REFERENCE_ENV) or Path(__file__).resolve().parents[2] / "results" /
                     "reference").resolve()


def record_dirs(path: str | Path) -> list[Path]:
    """Every finished run (a folder with summary.json) at or under ``path``: a run, a folder of runs, or a results
    root's runs/ only (ssl_bench.records.layout.records_folder: the shipped and copied records beside it are not
    yours)."""
    path = records_folder(path)
    if (path / "summary.json").exists():
        return [path]
    return sorted(p.parent for p in path.rglob("summary.json")) if path.is_dir() else []


# Keys of a run config that hold a path: a record keeps them relative to its results folder (see portable).
PATH_KEYS = ("output_dir", "eval.splits_dir")


def relative_to_results(path: str | Path, results_dir: str | Path) -> str:
    """``path`` as a record keeps it: relative to the results folder when inside it (records are copied between
    machines, where the writer's absolute paths mean nothing), else as given."""
    p, root = Path(path).expanduser().absolute(), Path(results_dir).expanduser().absolute()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(path)


def portable(cfg: DictConfig) -> DictConfig:
    """The config a run records (config.yaml, and summary.json's overrides): its paths relative to the results
    folder (the folder above output_dir, which also holds baselines/ and splits/), e.g. ``output_dir: runs``. Paths
    are not part of a configuration (NON_CONFIGURATION_KEYS), so its id is unchanged; records written with
    absolute paths read the same."""
    from omegaconf import OmegaConf

    root = ResultsLayout.of_runs(Path(str(cfg.output_dir)).expanduser().absolute()).root
    out = cfg.copy()
    with open_dict(out):
        for key in PATH_KEYS:
            value = OmegaConf.select(out, key)
            if value:
                OmegaConf.update(out, key, relative_to_results(value, root))
        if out.get("overrides"):
            out.overrides = [f"{k}={relative_to_results(v, root)}" if k.lstrip("+") in PATH_KEYS and v else o
                             for o in out.overrides for k, _, v in [o.partition("=")]]
    return out


def find_run_dir(cfg: DictConfig) -> Path:
    """The folder of ``cfg``'s run: ``output_dir/<run_id>``, or an existing folder of the same configuration and
    seed under another name (the name's words may change; its ``-s<seed>-<configuration id>`` tail does not)."""
    out = Path(cfg.output_dir)
    exact = out / run_id(cfg)
    if exact.exists() or cfg.get("run_id"):
        return exact
    same = sorted(out.glob(f"*-s{cfg.seed}-{configuration_id(cfg)}"))
    return same[0] if same else exact


def _normalise(summary: dict[str, Any]) -> dict[str, Any]:
    """One metric name means one thing: ``knn_top1`` is the kNN top-1 at k=KNN_K in every record (records
    written when it meant the first of eval.knn_k get it from their ``knn_top1_k<KNN_K>``, or lose it)."""
    m = summary.get("metrics", {})
    for prefix in ("", "random_"):
        if f"{prefix}knn_top1" in m:
            m[f"{prefix}knn_top1"] = m.get(f"{prefix}knn_top1_k{KNN_K}")
    for tree in (m.get("knn"), (m.get("random") or {}).get("knn")):
        if isinstance(tree, dict) and "top1" in tree:
            tree["top1"] = tree.get(f"top1_k{KNN_K}")
    return summary


def read_summary(run: str | Path) -> dict[str, Any]:
    """A record's summary.json with its metric names normalised (see :func:`_normalise`); UnreadableRecord if it
    cannot be read."""
    path = Path(run) / "summary.json"
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("metrics", {}), dict):
        raise UnreadableRecord(path, "not a run summary (a JSON object with metrics)")
    return _normalise(data)


def read_config(run: str | Path) -> dict[str, Any]:
    """A record's config.yaml; UnreadableRecord if it is not YAML or not a run's config."""
    path = Path(run) / "config.yaml"
    try:
        data = yaml.safe_load(_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UnreadableRecord(path, f"not valid YAML{where}: {getattr(exc, 'problem', None) or 'damaged'}"
                               ) from None
    if not (isinstance(data, dict) and all(isinstance(data.get(k), dict) and data[k].get("name")
                                           for k in ("method", "dataset"))):
        raise UnreadableRecord(path, "not a run's config (no method.name and dataset.name)")
    return data


def readable(run: str | Path) -> bool:
    """Whether ``run``'s record (those of summary.json, config.yaml, metrics.jsonl it has) can be read. One that
    cannot is skipped (one warning line; see ssl_bench.common.skipped), or, in strict mode, an error."""
    try:
        if (Path(run) / "summary.json").exists():
            read_summary(run)
        if (Path(run) / "config.yaml").exists():
            read_config(run)
        read_metrics(run)
    except UnreadableRecord as exc:
        skipped.skip(run, exc)
        return False
    return True


def load(path: str | Path = "results", sweeps: bool = True) -> pd.DataFrame:
    """Every finished run at or under ``path`` (a results folder, a runs folder or one run) as one DataFrame,
    one row per run: the summary's keys flattened with dots (``metrics.knn_top1`` = kNN top-1 at k=20,
    ``metrics.linear.top1``, ``cost.wall_s``), ``config.<key>`` for every resolved config key, ``configuration``
    (its label in words), ``configuration_id``, ``differences`` (keys that differ from the budget as defined),
    ``sweep`` (a sweep trial's sweep name, else empty) and ``path``. ``sweeps=False`` leaves sweep trials out.
    A path without records is a ConfigError (one line)."""
    runs = record_dirs(path)
    if not runs:
        where = records_folder(path)
        shipped = shipped_runs(path) if where != Path(path) else None
        raise ConfigError(f"no run records (summary.json) under {where}; run ssl_bench.run or ssl_bench.compare first"
                          + (f", or read the shipped ones: {shipped.parent}" if shipped else ""))
    rows, extra, left_out = [], [], {}
    for run in runs:
        try:
            rec = read_summary(run)
            cfg = read_config(run)
            read_metrics(run)  # the figures read it: a run is left out of every table and figure, or of none
            diffs = {k: v for k, (_, v) in differences(cfg).items()}
        except UnreadableRecord as exc:
            skipped.skip(run, exc)
            left_out[str(run)] = str(exc)
            continue
        rec = {k: v for k, v in rec.items() if k not in ("fingerprint", "overrides")}
        rec.update(path=str(run), configuration_id=configuration_id(cfg),
                   configuration=label(rec.get("method", cfg["method"]["name"]), diffs),
                   sweep=str((rec.get("tags") or {}).get("sweep", "")),
                   config={k: v for k, v in cfg.items() if k != "overrides"})
        rows.append(rec)
        extra.append(diffs)
    if not rows:
        raise ConfigError(f"no readable run record under {path}: all {len(runs)} are damaged (see the warnings)")
    df = pd.json_normalize(rows, sep=".")
    df["differences"] = extra
    if not sweeps:
        df = df[df["sweep"] == ""]
    df = df.reset_index(drop=True)
    df.attrs["skipped"] = left_out  # folder -> what is wrong, for a caller's "n runs skipped"
    return df


def load_epochs(path: str | Path = "results") -> pd.DataFrame:
    """Per-epoch metrics of every run, with the run's folder, id, method, dataset, budget, seed and configuration
    on each row."""
    frames = []
    for run in record_dirs(path):
        try:
            rec, rows, cfg = read_summary(run), read_metrics(run), read_config(run)
        except UnreadableRecord as exc:
            skipped.skip(run, exc)
            continue
        df = pd.json_normalize(rows, sep=".")
        for key in ("run_id", "method", "dataset", "budget", "seed"):
            df[key] = rec.get(key)
        df["path"] = str(run)
        df["configuration_id"] = configuration_id(cfg)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def dig(tree: Any, dotted: str) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``; None where a part is missing."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


# The accuracies with a random-initialisation floor (eval.random_baseline): (name, metric, its floor) in metrics.
FLOORS = (("knn", "knn_top1", "random_knn_top1"), ("linear", "linear.top1", "random.linear.top1"))


def below_floor(metrics: dict[str, Any]) -> list[str]:
    """The protocols (knn, linear) whose final top-1 is below the same run's random-initialisation floor: training
    made the backbone worse than no training. [] when none is, or no floor was measured."""
    out = []
    for name, key, floor in FLOORS:
        value, low = dig(metrics, key), dig(metrics, floor)
        if isinstance(value, int | float) and isinstance(low, int | float) and value < low:
            out.append(name)
    return out


def headline(summary: dict[str, Any]) -> str:
    """'kNN top-1 (k=20) 80.46% (random init 76.21%), linear probe top-1 84.61% (random init 79.80%)', and a second
    line when an accuracy is below its random-init floor."""
    m = _normalise(summary).get("metrics", {})
    parts = []
    for name, value, floor in ((f"kNN top-1 (k={KNN_K})", m.get("knn_top1"), m.get("random_knn_top1")),
                               ("linear probe top-1", dig(m, "linear.top1"), dig(m, "random.linear.top1"))):
        if value is not None:
            parts.append(f"{name} {value:.2f}%" + (f" (random init {floor:.2f}%)" if floor is not None else ""))
    low = below_floor(m)
    return (", ".join(parts) or "no accuracy in the record") + (
        f"\nbelow the floor: the {' and '.join(low)} top-1 is below this run's own random-initialisation baseline, "
        "training made the backbone worse than no training at all" if low else "")


def one_line(cfg: DictConfig, processes: int = 1, steps_per_epoch: int | None = None) -> str:
    """The run in one line: configuration label, dataset, budget, backbone, batch, epochs, crops, optimiser and lr."""
    diffs = {k: v for k, (_, v) in differences(cfg).items()}
    batch = cfg.data.batch_size
    per = f", {batch // processes} per process" if processes > 1 else ""
    steps = f" x {steps_per_epoch} steps" if steps_per_epoch else ""
    return (f"{label(cfg.method.name, diffs)} on {cfg.dataset.name}, budget {cfg.choices.budget}: "
            f"{cfg.backbone.name} backbone, batch {batch}{per}, {cfg.train.epochs} epochs{steps}, "
            f"crops {crops_label(cfg)}, {cfg.optim.name} lr {cfg.optim.lr} (for batch {batch}, not rescaled), "
            f"seed {cfg.seed}")


def migrate(src: str | Path, dst: str | Path | None = None) -> list[tuple[Path, Path]]:
    """Move every record under ``src`` to ``dst`` (default: ``src``) under its current name (see
    ssl_bench.records.identity.run_name), for records written when folders were named by a hash only. The files are not
    changed (summary.json keeps the run_id it was written with). Returns (old, new) pairs."""
    dst = Path(dst or src)
    moved = []
    # Every record read first: a damaged one is left where it is (a warning), or, strict, stops before any move.
    for run in [r for r in record_dirs(src) if readable(r)]:
        cfg = read_config(run)
        new = dst / run_name(cfg)
        if new.resolve() != run.resolve():
            if new.exists():
                raise ConfigError(f"cannot move {run} to {new}: a record of the same configuration and seed is there")
            new.parent.mkdir(parents=True, exist_ok=True)
            run.rename(new)
            moved.append((run, new))
    return moved


def main(argv: list[str]) -> int:
    """``python -m ssl_bench.results migrate SRC [DST] [strict=true]``: give records their readable names."""
    if "strict=true" in argv:
        skipped.set_strict()
        argv = [a for a in argv if a != "strict=true"]
    if len(argv) not in (2, 3) or argv[0] != "migrate":
        raise ConfigError("usage: python -m ssl_bench.results migrate SRC [DST] [strict=true]  (moves old records to "
                          "readable names; strict=true: a damaged record is an error, not skipped)")
    for old, new in migrate(argv[1], argv[2] if len(argv) == 3 else None):
        print(f"{old} -> {new}")
    return 0


