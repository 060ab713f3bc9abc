"""Worker for tests/test_evaluation.py: evaluate one run folder on 1 process (called in-process) or on 2
(``ACCELERATE_USE_CPU=1 python -m accelerate.commands.launch --multi_gpu --num_processes 2 tests/dist_eval_worker.py
<run> <out>``). It extracts the kNN features of the run's backbone, in memory and streamed to a float16 file
(the main process saves features, labels and kNN accuracies to <out>/features_<processes>.pt), then runs the
evaluate entry point on the run (kNN + cached linear probe, written into its summary.json by the main process;
it ends the process group, so it comes last)."""

from __future__ import annotations

import sys
from pathlib import Path

from ssl_bench.config.cli import leave

# Extraction batches of 48 (24 per process): the last batch of the 256 / 128 images is incomplete.
ARGS = ["eval=[knn,linear,finetune]", "eval.linear_mode=cached", "eval.linear_epochs=3", "eval.random_baseline=false",
        "eval.batch_size=48", "eval.knn_k=[5,20]", "data.num_workers=0", "train.num_threads=1",
        "eval.finetune_fractions=[0.01]", "eval.finetune_lr_backbone=[0.02]", "eval.finetune_lr_head=[0.5]",
        "eval.finetune_epochs=1", "eval.finetune_batch_size=64"]


def compute(run: str, out: str) -> None:
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState
    from omegaconf import OmegaConf

    from ssl_bench.config.cli import guarded
    from ssl_bench.data import EvalDataset, eval_transform, fixed_subset, load_split
    from ssl_bench.evaluate import main, run_config
    from ssl_bench.evaluation import extract_features, knn_accuracy, load_backbone
    from ssl_bench.models.networks import build_backbone

    cfg, _ = run_config(OmegaConf.load(Path(run) / "config.yaml"), ARGS[1:])
    acc = Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True))
    try:
        torch.set_num_threads(1)
        backbone = load_backbone(build_backbone(cfg), Path(run) / "checkpoint" / "model.safetensors")
        tf, e = eval_transform(cfg), cfg.eval
        train = EvalDataset(fixed_subset(load_split(cfg, "train"), e.knn_train_subset, cfg.data.subset_seed), tf)
        test = EvalDataset(fixed_subset(load_split(cfg, "test"), e.knn_test_subset, cfg.data.subset_seed), tf)
        tr_f, tr_y = extract_features(backbone, train, acc, e.batch_size)
        te_f, te_y = extract_features(backbone, test, acc, e.batch_size)
        spill = Path(out) / f"spill_{acc.num_processes}.npy"
        sp_f, sp_y = extract_features(backbone, train, acc, e.batch_size, spill_path=spill, max_memory_bytes=0)
        knn = knn_accuracy(tr_f, tr_y, te_f, te_y, list(e.knn_k), e.knn_temperature, 10)
        if acc.is_main_process:
            torch.save({"train_f": tr_f, "train_y": tr_y, "test_f": te_f, "test_y": te_y,
                        "spill_f": sp_f.clone(), "spill_y": sp_y, "spill_dtype": str(sp_f.dtype), "knn": knn},
                       Path(out) / f"features_{acc.num_processes}.pt")
        acc.wait_for_everyone()
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()
    code = guarded(main, [f"checkpoint={run}", *ARGS, f"eval.splits_dir={Path(out) / 'splits'}"])
    assert code == 0, code


if __name__ == "__main__":
    compute(sys.argv[1], sys.argv[2])
    leave(0)  # as the entry points end: Python's finalisation after gloo sometimes aborts (see leave)
