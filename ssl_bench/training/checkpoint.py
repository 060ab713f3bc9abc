"""A run's checkpoints on disk (``<run>/checkpoint/``): writing, verifying, rotating and loading them. A checkpoint
holds Accelerate's state (model with the method's global state, optimiser, RNG), each process's local method state
(``method_local_<rank>.pt``: queues) and the loop position (``loop.json``); it is written to ``checkpoint.tmp`` with a
manifest of checksums written last, then renamed, and the previous one is kept (``checkpoint.prev``) until a newer
one is complete: an interrupted save never replaces a good checkpoint, and a damaged one (a copy cut short) is
detected on resume, which falls back on the previous one. Imports Accelerate, torch, the objective interface, the
records' JSON helpers, configuration's ConfigError and the errors; knows nothing of the loop but the position (a
dict) it is handed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from ssl_bench.config.compose import ConfigError
from ssl_bench.errors import WriteFailed
from ssl_bench.methods.base import Method
from ssl_bench.records.io import read_json, write_json

# A run's checkpoints: the newest, the one before it (kept until a newer one is complete) and one being written.
CHECKPOINT, CHECKPOINT_PREV, CHECKPOINT_TMP = "checkpoint", "checkpoint.prev", "checkpoint.tmp"
MANIFEST = "manifest.json"
POSITION = "loop.json"
RANKS = "ranks.json"  # how many processes wrote the checkpoint (each its method_local_<rank>.pt)
# Tests: SSL_BENCH_DIE_IN_CHECKPOINT=<where>[:<n>] ends the process (os._exit, as kill -9 would) at that point of the
# n-th checkpoint write (default the first): after_state (model and optimiser written, nothing else) or
# after_manifest (complete, not yet renamed into place).
DIE_ENV = "SSL_BENCH_DIE_IN_CHECKPOINT"
TOKEN = ".ranks"  # the run folder's proof that every process sees it (check_shared_folder)
SHARED = ("a run on several processes or nodes needs output_dir on a filesystem every process sees (each writes its "
          "own state into the checkpoint folder and process 0 renames it; docs/scaling.md)")
_saves: dict[str, int] = {}


def _die_if_asked(where: str) -> None:
    spec = os.environ.get(DIE_ENV, "")
    if not spec or spec.split(":")[0] != where:
        return
    _saves[where] = _saves.get(where, 0) + 1
    if _saves[where] == int(spec.split(":")[1] if ":" in spec else 1):
        os._exit(137)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}[Errno {exc.errno}] {exc.strerror}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _disk_error(exc: BaseException) -> bool:
    """Whether writing failed for the disk's sake (an OSError, or torch's / safetensors' wrapping of one)."""
    if isinstance(exc, OSError | WriteFailed):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("no space", "errno", "file write failed", "ioerror", "disk quota", "read-only"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_state_file(folder: Path, rank: int) -> Path:
    """The file of one process's local method state (its queues) in a checkpoint folder."""
    return folder / f"method_local_{rank}.pt"


def write_manifest(folder: Path) -> None:
    """manifest.json: size and sha256 of every file of the checkpoint, written last (atomically)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    write_json(folder / MANIFEST, {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                                   for p in files})


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder (None: complete and every file as written). One without a manifest
    (written before checkpoints had one) is taken as complete when it has its loop position."""
    if not folder.is_dir():
        return "missing"
    manifest = folder / MANIFEST
    if not manifest.exists():
        if folder.name == CHECKPOINT_TMP:
            return "incomplete (its write was interrupted)"
        return None if (folder / POSITION).exists() else f"incomplete (no {POSITION})"
    try:
        files = read_json(manifest)
    except ConfigError as exc:
        return f"its {MANIFEST} is damaged ({exc})"
    for name, want in sorted(files.items()):
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != want["bytes"]:
            return f"{name} has {p.stat().st_size} bytes, {want['bytes']} were written (cut short?)"
        if _sha256(p) != want["sha256"]:
            return f"{name} differs from its checksum (damaged)"
    return None


def usable_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest complete, verified checkpoint of ``run_dir`` and a note per newer one that is damaged. A complete
    checkpoint.tmp (killed between its manifest and its rename) is the newest. (None, []) when the run has no
    checkpoint at all; a ConfigError (one line) when it has some and none is usable."""
    notes, problems = [], []
    for name in (CHECKPOINT_TMP, CHECKPOINT, CHECKPOINT_PREV):
        folder = run_dir / name
        if not folder.exists():
            continue
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, notes
        problems.append(f"{name}: {problem}")
        if name != CHECKPOINT_TMP:  # an interrupted write is normal after a kill, not news; a damaged checkpoint is
            notes.append(f"checkpoint {folder} is unusable: {problem}")
    if problems:
        raise ConfigError(f"no usable checkpoint in {run_dir} ({'; '.join(problems)}): start the run over with "
                          "overwrite=true")
    return None, []


def save_checkpoint(acc: Accelerator, run_dir: Path, method: Method, position: dict[str, Any]) -> None:
    """Write everything to checkpoint.tmp, its manifest (a sha256 per file) last, then rotate: the current
    checkpoint becomes checkpoint.prev and checkpoint.tmp the current one (main process renames). At every
    moment one complete, verifiable checkpoint exists, so a kill or a full disk mid-write loses at most the
    epoch in progress. A disk error is one line (WriteFailed); the half-written checkpoint.tmp is removed.
    Every process calls it (they wait for each other); ``position`` is the loop's, as loop.json."""
    tmp, current = run_dir / CHECKPOINT_TMP, run_dir / CHECKPOINT
    try:
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        _die_if_asked("after_state")
        torch.save(method.local_state_dict(), local_state_file(tmp, acc.process_index))
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_json(tmp / POSITION, position)
            write_json(tmp / RANKS, {"num_processes": acc.num_processes})
            write_manifest(tmp)  # last: a checkpoint without it is incomplete
            _die_if_asked("after_manifest")
            prev = run_dir / CHECKPOINT_PREV
            if current.exists():
                if prev.exists():
                    shutil.rmtree(prev)
                os.replace(current, prev)
            os.replace(tmp, current)
    except (OSError, RuntimeError, WriteFailed) as exc:
        if not _disk_error(exc):
            raise
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise WriteFailed(f"cannot write the checkpoint {tmp}: {_first_line(exc)}; the previous checkpoint is "
                          "kept (resume=true continues from it)") from exc
    acc.wait_for_everyone()


def load_checkpoint(acc: Accelerator, run_dir: Path, method: Method) -> tuple[Path, dict[str, Any], list[str]] | None:
    """Load the newest usable checkpoint (see :func:`usable_checkpoint`) into the prepared objects and this process's
    method: (its folder, the loop position, a note per newer damaged one), or None when there is none at all. None
    usable is a ConfigError. Every process calls it and loads the same folder (the main process's verdict)."""
    box: list[Any] = [None]
    if acc.is_main_process:  # one verdict for every process, so all load the same slot
        try:
            found, notes = usable_checkpoint(run_dir)
            box[0] = (str(found) if found else None, notes, None)
        except ConfigError as exc:
            box[0] = (None, [], str(exc))
    if acc.num_processes > 1:
        broadcast_object_list(box)
    found_s, notes, error = box[0]
    if error:
        raise ConfigError(error)
    if found_s is None:
        return None
    found = Path(found_s)
    _check_rank_files(acc, found)  # before anything is loaded: a refused resume changes nothing
    acc.load_state(str(found))
    method.load_local_state_dict(torch.load(local_state_file(found, acc.process_index), weights_only=False))
    return found, read_json(found / POSITION), notes


def rank_files_problem(folder: Path, num_processes: int, process_index: int) -> str | None:
    """Why this process cannot resume from ``folder``'s rank-local state, or None. The checkpoint says how many
    processes wrote it (ranks.json; older ones: the rank files there), each its ``method_local_<rank>.pt``: that
    count must equal this run's, and the files must be there — process 0 checks every one in its folder, each other
    process its own (on a node-local disk the other nodes' files never reach process 0's folder)."""
    ranks = folder / RANKS
    written = (int(read_json(ranks)["num_processes"]) if ranks.exists()
               else len(list(folder.glob("method_local_*.pt"))) or num_processes)
    if written != num_processes:
        return (f"{folder} was written by {written} process{'es' if written > 1 else ''} and this run has "
                f"{num_processes}: resume with {written}, or start the run over (overwrite=true)")
    missing = [local_state_file(folder, r).name for r in (range(written) if process_index == 0 else [process_index])
               if not local_state_file(folder, r).exists()]
    if missing:
        return (f"{folder} lacks {', '.join(missing)} (the processes' queues or memory banks), seen from process "
                f"{process_index}: {SHARED}; resume where every process's file is there, or start over "
                "(overwrite=true)")
    return None


def _check_rank_files(acc: Accelerator, folder: Path) -> None:
    """Every process checks its own view of ``folder``; all stop with the first problem, or none does."""
    problems = [rank_files_problem(folder, acc.num_processes, acc.process_index)]
    if acc.num_processes > 1:
        problems = gather_object(problems)
    first = next((p for p in problems if p), None)
    if first:
        raise ConfigError(f"cannot resume: {first}")


def check_shared_folder(acc: Accelerator, run_dir: Path) -> None:
    """With several processes, prove that every one sees the run folder process 0 writes in: process 0 writes a fresh
    token, every process reads it back. A process that reads no token or another one stops every process with one
    line naming the shared-filesystem requirement, before anything is trained."""
    if acc.num_processes <= 1:
        return
    box = [(os.urandom(8).hex(), str(run_dir)) if acc.is_main_process else None]
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / TOKEN, {"token": box[0][0]})
    broadcast_object_list(box)
    acc.wait_for_everyone()
    token, written = box[0]
    try:
        seen = read_json(run_dir / TOKEN).get("token")
    except (OSError, ValueError):
        seen = None
    blind = [i for i, ok in enumerate(gather_object([seen == token])) if not ok]
    if blind:
        raise ConfigError(f"process{'es' if len(blind) > 1 else ''} {', '.join(map(str, blind))} cannot see "
                          f"{written} as process 0 writes it: {SHARED}")
