"""Per-test-image predictions of the final evaluation: ``<run>/predictions.npz``.

A record's accuracy is one number from 10,000 right-or-wrong answers; with the answers kept, a comparison can
resample the test images as well as the seeds (the test set's share of the noise, issue 30 item 6) without the
weights, which records never keep. The file holds, for the evaluated (pretrained) backbone only, one row per
evaluation seed (eval.seeds; a seed may draw its own test subset, so every row names its images)::

    seeds   [S]      the evaluation seeds, in eval.seeds order
    index   [S, N]   each test image's position in the test split (0..N-1 when the whole split is used)
    labels  [S, N]   its true class
    knn     [S, N]   the kNN's predicted class at k = ssl_bench.config.schema.KNN_K (the k of the headline kNN)
    linear  [S, N]   the linear probe's predicted class (argmax of its logits; only when the probe ran)
    knn_k   []       KNN_K when the file was written

Classes and positions are stored in the smallest unsigned integer type that holds them, compressed (a few KB to
tens of KB for Fashion-MNIST). The accuracies in summary.json are computed from the same predictions, so
``100 * mean(knn == labels)`` of a row is that seed's kNN top-1. Read back with
:func:`ssl_bench.records.io.read_predictions`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ssl_bench.records.io import write_atomic

PREDICTIONS = "predictions.npz"


def smallest_uint(values: np.ndarray) -> np.ndarray:
    """``values`` (non-negative integers) as uint8, uint16 or uint32, whichever is the smallest that holds them."""
    top = int(values.max()) if values.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values.astype(np.int64)


def prediction_arrays(seeds: list[int], rows: dict[str, dict[int, np.ndarray]], knn_k: int) -> dict[str, np.ndarray]:
    """The file's arrays from ``rows`` (name -> seed -> 1-D array: index, labels, knn, linear), seeds in order;
    a protocol missing for some seed is left out whole (the rows must line up)."""
    out = {"seeds": np.asarray(seeds, dtype=np.int32), "knn_k": np.asarray(knn_k, dtype=np.int32)}
    for name in ("index", "labels", "knn", "linear"):
        per_seed = rows.get(name, {})
        if per_seed and all(s in per_seed for s in seeds):
            out[name] = smallest_uint(np.stack([np.asarray(per_seed[s]) for s in seeds]))
    return out


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz (what np.savez_compressed writes) whose bytes depend on the arrays only: members in name
    order with a fixed time stamp, so the same predictions give the same file (a retrain that copies them into a
    shipped record changes nothing in git when they are already there)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_predictions(run_dir: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """``<run_dir>/predictions.npz``, compressed and written atomically (whole or not at all, like every record
    file); returns its path."""
    path = Path(run_dir) / PREDICTIONS
    write_atomic(path, npz_bytes(arrays))
    return path
