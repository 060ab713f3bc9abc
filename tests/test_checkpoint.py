"""Checkpoint storage (ssl_bench/training/checkpoint.py) on its own, without training: rotation, the manifest's
verdicts, the fallback on the previous checkpoint, a full disk, and each process's local method state. A tiny linear
model through a real Accelerator (CPU), or, for two processes, two threads with a stand-in Accelerator. Seconds.

The whole path (a kill inside a write, a damaged checkpoint, then resume=true) is in tests/test_damaged_files.py.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from ssl_bench.config.compose import ConfigError
from ssl_bench.errors import WriteFailed
from ssl_bench.training import checkpoint as ckpt
from ssl_bench.training.loop import LoopState, Trainer


class QueueMethod:
    """The two calls checkpoints make on a method: its process-local state (a queue) out and back in."""

    def __init__(self, queue: torch.Tensor) -> None:
        self.queue = queue

    def local_state_dict(self) -> dict:
        return {"queue": self.queue.clone()}

    def load_local_state_dict(self, state: dict) -> None:
        self.queue = state["queue"]


@pytest.fixture
def acc():
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    model, _ = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    accelerator.test_model = model
    yield accelerator
    AcceleratorState._reset_state()
    GradientState._reset_state()


def save(acc: Accelerator, run: Path, epoch: int, fill: float) -> None:
    """A checkpoint at ``epoch`` whose weights and queue are all ``fill``."""
    with torch.no_grad():
        acc.test_model.weight.fill_(fill)
    ckpt.save_checkpoint(acc, run, QueueMethod(torch.full((2,), fill)), {**LoopState(epoch=epoch).__dict__})


def position(folder: Path) -> int:
    return json.loads((folder / ckpt.POSITION).read_text())["epoch"]


def test_rotation_keeps_the_newest_and_the_one_before_each_complete(tmp_path, acc):
    for epoch in (1, 2, 3):
        save(acc, tmp_path, epoch, float(epoch))
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT, ckpt.CHECKPOINT_PREV]
    assert position(tmp_path / ckpt.CHECKPOINT) == 3 and position(tmp_path / ckpt.CHECKPOINT_PREV) == 2
    for name in (ckpt.CHECKPOINT, ckpt.CHECKPOINT_PREV):
        folder = tmp_path / name
        assert ckpt.checkpoint_problem(folder) is None
        listed = json.loads((folder / ckpt.MANIFEST).read_text())
        assert sorted(listed) == sorted(p.name for p in folder.iterdir() if p.name != ckpt.MANIFEST)
        assert {"loop.json", "method_local_0.pt", "model.safetensors", "optimizer.bin"} <= set(listed)


def test_the_newest_checkpoint_is_loaded_with_its_weights_queue_and_position(tmp_path, acc):
    assert ckpt.load_checkpoint(acc, tmp_path, QueueMethod(torch.zeros(2))) is None  # no checkpoint at all
    save(acc, tmp_path, 1, 1.0)
    save(acc, tmp_path, 2, 2.0)
    with torch.no_grad():
        acc.test_model.weight.fill_(9.0)  # training went on after the save: none of it may come back
    method = QueueMethod(torch.zeros(2))
    found, pos, notes = ckpt.load_checkpoint(acc, tmp_path, method)
    assert found == tmp_path / ckpt.CHECKPOINT and pos["epoch"] == 2 and notes == []
    assert torch.equal(method.queue, torch.full((2,), 2.0))
    assert torch.equal(acc.test_model.weight, torch.full((3, 4), 2.0))


@pytest.mark.parametrize("damage, says", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]),
     "model.safetensors has 100 bytes"),
    (lambda f: (f / "optimizer.bin").write_bytes(bytes(b ^ 1 for b in (f / "optimizer.bin").read_bytes())),
     "optimizer.bin differs from its checksum (damaged)"),
    (lambda f: (f / "method_local_0.pt").unlink(), "method_local_0.pt is missing"),
    (lambda f: (f / ckpt.MANIFEST).write_text("{not json"), f"its {ckpt.MANIFEST} is damaged"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path, acc, damage, says):
    save(acc, tmp_path, 1, 1.0)
    save(acc, tmp_path, 2, 2.0)
    newest = tmp_path / ckpt.CHECKPOINT
    damage(newest)
    assert says in ckpt.checkpoint_problem(newest)
    method = QueueMethod(torch.zeros(2))
    found, pos, notes = ckpt.load_checkpoint(acc, tmp_path, method)
    assert found == tmp_path / ckpt.CHECKPOINT_PREV and pos["epoch"] == 1
    assert len(notes) == 1 and str(newest) in notes[0] and says in notes[0]
    assert torch.equal(method.queue, torch.full((2,), 1.0))
    assert torch.equal(acc.test_model.weight, torch.full((3, 4), 1.0))
    # The trainer says it in one line, with where it resumes from.
    said: list[str] = []
    trainer = SimpleNamespace(acc=acc, run_dir=tmp_path, method=QueueMethod(torch.zeros(2)), log=said.append)
    assert Trainer.load_checkpoint(trainer) is True and trainer.state == LoopState(**pos)
    assert said == [f"warning: {notes[0]}; resuming from {found} (epoch 2, batch 0, step 0)"]
    # Nothing usable: one ConfigError naming each checkpoint's problem and how to start over.
    damage(tmp_path / ckpt.CHECKPOINT_PREV)
    with pytest.raises(ConfigError, match="no usable checkpoint") as err:
        ckpt.load_checkpoint(acc, tmp_path, method)
    assert "\n" not in str(err.value) and "overwrite=true" in str(err.value)
    assert f"{ckpt.CHECKPOINT}: " in str(err.value) and f"{ckpt.CHECKPOINT_PREV}: " in str(err.value)


def test_manifest_verdicts_on_incomplete_and_older_checkpoints(tmp_path, acc):
    save(acc, tmp_path, 1, 1.0)
    folder = tmp_path / ckpt.CHECKPOINT
    assert ckpt.checkpoint_problem(tmp_path / "nothing") == "missing"
    (folder / ckpt.MANIFEST).unlink()
    assert ckpt.checkpoint_problem(folder) is None  # written before checkpoints had a manifest: has its position
    (folder / ckpt.POSITION).unlink()
    assert ckpt.checkpoint_problem(folder) == "incomplete (no loop.json)"
    folder.rename(tmp_path / ckpt.CHECKPOINT_TMP)  # a write that was interrupted: not usable, not news either
    with pytest.raises(ConfigError, match="checkpoint.tmp: incomplete"):
        ckpt.usable_checkpoint(tmp_path)


def test_a_complete_checkpoint_tmp_is_the_newest(tmp_path, acc):
    """Killed between the manifest and the rename: checkpoint.tmp is complete and newer than checkpoint."""
    save(acc, tmp_path, 1, 1.0)
    save(acc, tmp_path, 2, 2.0)
    (tmp_path / ckpt.CHECKPOINT).rename(tmp_path / ckpt.CHECKPOINT_TMP)
    (tmp_path / ckpt.CHECKPOINT_PREV).rename(tmp_path / ckpt.CHECKPOINT)
    assert ckpt.usable_checkpoint(tmp_path) == (tmp_path / ckpt.CHECKPOINT_TMP, [])


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_it_in_one_line(tmp_path, acc, monkeypatch):
    save(acc, tmp_path, 1, 1.0)
    before = {p.name: p.read_bytes() for p in (tmp_path / ckpt.CHECKPOINT).iterdir()}

    def full(folder: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / ckpt.MANIFEST))

    monkeypatch.setattr(ckpt, "write_manifest", full)
    with pytest.raises(WriteFailed) as err:
        save(acc, tmp_path, 2, 2.0)
    assert "\n" not in str(err.value) and "[Errno 28] No space left on device" in str(err.value)
    assert "the previous checkpoint is kept" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT]  # checkpoint.tmp removed
    assert {p.name: p.read_bytes() for p in (tmp_path / ckpt.CHECKPOINT).iterdir()} == before

    def broken(folder: Path) -> None:
        raise RuntimeError("a bug, not the disk")

    monkeypatch.setattr(ckpt, "write_manifest", broken)
    with pytest.raises(RuntimeError, match="a bug, not the disk"):  # not dressed up as a disk error
        save(acc, tmp_path, 2, 2.0)


# -- two processes: each writes and reads back its own local state ----------------------------------------------------
class ThreadAccelerator:
    """What checkpoints use of an Accelerator, for one of ``n`` threads standing in for processes: a barrier for
    wait_for_everyone, the model (a tensor) written by the main process, random states by each."""

    def __init__(self, rank: int, barrier: threading.Barrier, weights: torch.Tensor) -> None:
        self.process_index, self.num_processes, self.barrier = rank, barrier.parties, barrier
        self.is_main_process = rank == 0
        self.weights = weights

    def wait_for_everyone(self) -> None:
        self.barrier.wait(timeout=60)

    def save_state(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        if self.is_main_process:
            torch.save(self.weights, Path(folder) / "model.pt")
        torch.save(torch.tensor(self.process_index), Path(folder) / f"random_states_{self.process_index}.pkl")

    def load_state(self, folder: str) -> None:
        self.weights = torch.load(Path(folder) / "model.pt")


def test_each_process_writes_and_reads_back_its_own_local_state(tmp_path, monkeypatch):
    n, barrier, rank_of = 2, threading.Barrier(2), threading.local()
    thread_collectives(monkeypatch, n, barrier, rank_of)

    def process(rank: int, run: Path, epoch: int) -> tuple:
        rank_of.rank = rank
        acc = ThreadAccelerator(rank, barrier, torch.full((2,), float(epoch)))
        ckpt.save_checkpoint(acc, run, QueueMethod(torch.full((3,), 10.0 * epoch + rank)), {"epoch": epoch})
        method = QueueMethod(torch.zeros(3))
        found, pos, _ = ckpt.load_checkpoint(acc, run, method)
        return found, pos, method.queue, acc.weights

    with ThreadPoolExecutor(n) as pool:
        for epoch in (1, 2):
            out = [f.result(timeout=120) for f in [pool.submit(process, r, tmp_path, epoch) for r in range(n)]]
            for rank, (found, pos, queue, weights) in enumerate(out):
                assert found == tmp_path / ckpt.CHECKPOINT and pos == {"epoch": epoch}
                assert torch.equal(queue, torch.full((3,), 10.0 * epoch + rank))  # its own, not rank 0's
                assert torch.equal(weights, torch.full((2,), float(epoch)))
    for name, epoch in ((ckpt.CHECKPOINT, 2), (ckpt.CHECKPOINT_PREV, 1)):
        folder = tmp_path / name
        assert ckpt.checkpoint_problem(folder) is None
        for rank in range(n):
            local = torch.load(ckpt.local_state_file(folder, rank))
            assert torch.equal(local["queue"], torch.full((3,), 10.0 * epoch + rank))


def thread_collectives(monkeypatch, n: int, barrier: threading.Barrier, rank_of: threading.local) -> None:
    """The checkpoint module's collectives for threads standing in for processes: broadcast (the main process's
    verdict to every process) and gather."""
    shared: dict = {}

    def broadcast(box: list) -> None:
        if rank_of.rank == 0:
            shared["box"] = list(box)
        barrier.wait(timeout=60)
        box[:] = shared["box"]

    monkeypatch.setattr(ckpt, "broadcast_object_list", broadcast)
    monkeypatch.setattr(ckpt, "gather_object", thread_gather(n, barrier, rank_of))


def thread_gather(n: int, barrier: threading.Barrier, rank_of: threading.local):
    """accelerate.utils.gather_object for threads standing in for processes: every one's list, in rank order."""
    parts: dict[int, list] = {}

    def gather(obj: list) -> list:
        parts[rank_of.rank] = list(obj)
        barrier.wait(timeout=60)
        out = [x for r in range(n) for x in parts[r]]
        barrier.wait(timeout=60)  # all have read before the next call overwrites
        return out
    return gather


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_checkpoint_of_another_process_count_is_refused_and_nothing_changes(tmp_path, acc):
    """Written by 2 processes, resumed on 1: one line saying so and what to do; no file touched, nothing loaded."""
    save(acc, tmp_path, 1, 1.0)
    folder = tmp_path / ckpt.CHECKPOINT
    (folder / ckpt.RANKS).write_text(json.dumps({"num_processes": 2}))
    (folder / "method_local_1.pt").write_bytes((folder / "method_local_0.pt").read_bytes())
    ckpt.write_manifest(folder)
    before = snapshot(folder)
    with torch.no_grad():
        acc.test_model.weight.fill_(7.0)
    method = QueueMethod(torch.zeros(2))
    with pytest.raises(ConfigError) as err:
        ckpt.load_checkpoint(acc, tmp_path, method)
    assert str(err.value) == (f"cannot resume: {folder} was written by 2 processes and this run has 1: resume with 2, "
                              "or start the run over (overwrite=true)")
    assert snapshot(folder) == before
    assert torch.equal(method.queue, torch.zeros(2)) and bool((acc.test_model.weight == 7.0).all())  # not loaded


def test_a_rank_file_that_did_not_reach_the_folder_is_named_on_every_process(tmp_path, monkeypatch):
    """Two processes, the second's method_local_1.pt missing from the checkpoint (a node-local disk): both
    processes stop with the same line naming the file and the shared-filesystem requirement."""
    n, barrier, rank_of = 2, threading.Barrier(2), threading.local()
    thread_collectives(monkeypatch, n, barrier, rank_of)

    def write(rank: int) -> None:
        rank_of.rank = rank
        acc = ThreadAccelerator(rank, barrier, torch.ones(2))
        ckpt.save_checkpoint(acc, tmp_path, QueueMethod(torch.full((3,), float(rank))), {"epoch": 1})

    def resume(rank: int) -> str:
        rank_of.rank = rank
        acc = ThreadAccelerator(rank, barrier, torch.ones(2))
        with pytest.raises(ConfigError) as err:
            ckpt.load_checkpoint(acc, tmp_path, QueueMethod(torch.zeros(3)))
        return str(err.value)

    with ThreadPoolExecutor(n) as pool:
        [f.result(timeout=120) for f in [pool.submit(write, r) for r in range(n)]]
        folder = tmp_path / ckpt.CHECKPOINT
        (folder / "method_local_1.pt").unlink()
        ckpt.write_manifest(folder)  # as process 0 would have listed its own folder
        before = snapshot(folder)
        said = [f.result(timeout=120) for f in [pool.submit(resume, r) for r in range(n)]]
    assert said[0] == said[1] and said[0].startswith(f"cannot resume: {folder} lacks method_local_1.pt")
    assert "needs output_dir on a filesystem every process sees" in said[0] and "\n" not in said[0]
    assert snapshot(folder) == before


def test_rank_files_problem_by_case(tmp_path):
    folder = tmp_path
    assert ckpt.rank_files_problem(folder, 1, 0) is not None  # nothing there: process 0's own file is missing
    (folder / "method_local_0.pt").write_bytes(b"x")
    assert ckpt.rank_files_problem(folder, 1, 0) is None  # an older checkpoint without ranks.json
    assert "written by 1 process and this run has 2" in ckpt.rank_files_problem(folder, 2, 1)
    (folder / ckpt.RANKS).write_text(json.dumps({"num_processes": 2}))
    assert "lacks method_local_1.pt" in ckpt.rank_files_problem(folder, 2, 0)  # process 0 checks every file
    assert "lacks method_local_1.pt" in ckpt.rank_files_problem(folder, 2, 1)  # ... each other its own
    (folder / "method_local_1.pt").write_bytes(b"x")
    assert ckpt.rank_files_problem(folder, 2, 0) is None and ckpt.rank_files_problem(folder, 2, 1) is None
