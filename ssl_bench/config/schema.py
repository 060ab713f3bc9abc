"""The run config's schema: every default of the framework, declared once, as dataclasses (Hydra's structured
configs), and the choices and keys the rest of the package names. Every default of an objective is declared once, in
its method file (``methods/<name>.py``). A leaf: no Hydra, no torch; composition is ssl_bench.config.compose, validation
ssl_bench.config.validation, the config search path ssl_bench.config.searchpath.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# Keys that cannot change a run's result: where and how it is stored, logged and shown, how many workers and
# threads compute it, and evaluation keys that only say where files go or how much memory to use. Everything else
# (and not the seed) is the run's *configuration* (ssl_bench/records/identity.py): runs are pooled as seeds of one
# configuration only when their configurations are equal.
NON_CONFIGURATION_KEYS = ("resume", "overwrite", "output_dir", "run_id", "tags", "print_config", "dataset.root",
                          "dataset.download", "data.num_workers", "train.num_threads", "train.log_every",
                          "train.tensorboard", "train.trackers", "train.progress", "train.checkpoint_every",
                          "eval.splits_dir", "eval.feature_memory_mb", "eval.baseline_cache", "eval.batch_size",
                          # Speed options: the same computation in another order or layout (tests: equal results
                          # within float round-off, as with more threads).
                          "train.compile", "train.compile_backend", "train.channels_last", "optim.fused",
                          # Measurements after each epoch that only read the model (tests: equal weights and losses
                          # with health and guardrails on or off); stop ends a run, it never changes its numbers.
                          "health", "train.guardrails")
# The k of the headline kNN metric: ``knn_top1`` is always the weighted kNN top-1 at this k (computed even when
# eval.knn_k does not list it); every other k is recorded as ``knn_top1_k<k>``.
KNN_K = 20


def knn_ks(e: Any) -> list[int]:
    """The k's a kNN evaluation computes: KNN_K first (the headline), then eval.knn_k."""
    return list(dict.fromkeys([KNN_K, *[int(k) for k in e.knn_k]]))


# The valid choices of keys that validation checks.
BACKBONES = ("small_cnn", "resnet18", "resnet50")
OPTIMIZERS = ("sgd", "lars", "adamw")
PRECISIONS = ("no", "fp16", "bf16")
AUGMENT_BACKENDS = ("auto", "pil", "tensor", "hybrid", "device_decode")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
FUSED_OPTIMIZERS = ("sgd", "adamw")
GUARDRAILS = ("warn", "stop", "off")
CLASS_LIST_DATASETS = ("imagenet", "imagenet100", "imagefolder", "tiny_imagenet")
EVAL_PROTOCOLS = ("knn", "linear", "finetune", "supervised")
LINEAR_MODES = ("cached", "augmented")


@dataclass
class DatasetConfig:
    name: str = MISSING
    # Where the data lives; null lets each dataset look in its usual places (see ssl_bench/data).
    root: str | None = None
    # Side of the (square) images in pixels; 0 for datasets of varying size (image folders, ImageNet).
    image_size: int = 0
    num_classes: int = 0
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Splits: pretraining may use several (STL-10: unlabeled + train); evaluation uses train/test.
    pretrain_splits: list[str] = field(default_factory=lambda: ["train"])
    train_split: str = "train"
    test_split: str = "test"
    # Hugging Face datasets: column names.
    image_key: str = "image"
    label_key: str = "label"
    # Allow torchvision to download when the data is missing (never in tests or CI).
    download: bool = False
    # Image-folder datasets (imagenet, imagenet100, imagefolder, tiny_imagenet): keep only these classes, a text
    # file of class folder names (wnids) one per line (a relative path: from the working directory, else from
    # experiments/dataset/) or an inline list. Labels are 0..K-1 in sorted name order; num_classes becomes K.
    classes: Any = None
    # Hugging Face (dataset=hf): stream the pretraining split instead of downloading it (ssl_bench/data/streaming.py).
    streaming: bool = False
    # Streaming: examples held in each loader worker's shuffle buffer (encoded: ~1.1 GB per worker for ImageNet).
    shuffle_buffer: int = 10_000
    # Streaming: examples in the pretraining split when the dataset's info does not say (0 = from the info).
    num_examples: int = 0


@dataclass
class DataConfig:
    # The global batch (all processes together), as the papers report it; each process gets 1/N of it.
    batch_size: int = 256
    # Loader workers per process; -1 picks min(8, cores per process).
    num_workers: int = -1
    # Pretrain on a fixed random subset of this many images (0 = the whole split); same subset for all methods.
    train_subset: int = 0
    subset_seed: int = 0


@dataclass
class CropSpec:
    n: int = 2
    size: int = 224
    scale: list[float] = field(default_factory=lambda: [0.14, 1.0])


def _default_crops() -> dict[str, CropSpec]:
    # SwAV's multi-crop: 2 x 224 at scale (0.14, 1) and 6 x 96 at (0.05, 0.14) (paper, A.2).
    return {"global": CropSpec(2, 224, [0.14, 1.0]), "local": CropSpec(6, 96, [0.05, 0.14])}


@dataclass
class AugmentConfig:
    # Where crops are made: 'pil' per image in loader workers (lightly's transforms, any image size),
    # 'tensor' batched on the training device (fixed-size images), 'hybrid' crops in the workers and colour
    # batched on the device (any image size), 'device_decode' workers only read the files' encoded bytes and
    # the device decodes, crops and colours a batch (image files); 'auto' = tensor for fixed-size images, else
    # hybrid on a GPU and pil on a CPU (see ssl_bench.training.multicrop.resolve_backend).
    backend: str = "auto"
    # SimCLR's colour distortion, blur and flip, applied to every crop (SwAV paper, A.2).
    hflip_prob: float = 0.5
    color_jitter_prob: float = 0.8
    color_jitter_strength: float = 1.0
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    # Replace the 7x7/2 conv + max-pool stem by a 3x3/1 conv (CIFAR-size images).
    small_image_stem: bool = False
    # Channels of the first stage of the small convnet (ignored by the ResNets).
    width: int = 32
    # Batch norm over the global batch (all processes); null = on with several processes (as the papers do).
    # CUDA: torch.nn.SyncBatchNorm; CPU (gloo): ssl_bench.training.syncbn.GlobalBatchNorm.
    sync_bn: bool | None = None


@dataclass
class HeadConfig:
    # 2-layer MLP with BN: feat -> hidden -> out (SwAV: 2048 -> 128).
    hidden_dim: int = 2048
    out_dim: int = 128


@dataclass
class OptimConfig:
    name: str = "lars"
    # The learning rate at the configured global batch; never rescaled behind the user's back.
    lr: float = 4.8
    final_lr: float = 0.0048
    warmup_epochs: float = 10.0
    start_warmup_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    # Bias and normalisation parameters get no weight decay (and no LARS adaptation).
    exclude_bias_and_norm: bool = True
    lars_trust_coefficient: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # torch's fused kernel for the whole update (sgd, adamw; lightly's LARS has none). false: torch's default,
    # which is already the multi-tensor (foreach) update on a GPU.
    fused: bool = False


@dataclass
class TrainConfig:
    epochs: int = 100
    # Mixed precision: no, fp16 or bf16 wins when set; null = what `accelerate config` / `accelerate launch
    # --mixed_precision` says (ACCELERATE_MIXED_PRECISION, else no). The precision used is in summary.json.
    precision: str | None = None
    grad_accum: int = 1
    # Save a checkpoint every N epochs (and always at the end and on SIGTERM/SIGINT).
    checkpoint_every: int = 1
    # Stop an epoch after this many steps (0 = full epoch); for smoke budgets.
    max_steps_per_epoch: int = 0
    # Torch threads per process; 0 = all cores divided among the local processes.
    num_threads: int = 0
    # Trackers get the loss and lr every N optimiser steps (0: only the per-epoch metrics).
    log_every: int = 10
    # Progress bars; only ever drawn on the main process when stderr is a terminal (ssl_bench/common/progress.py).
    progress: bool = True
    # Same as trackers=[tensorboard] (kept for older commands).
    tensorboard: bool = False
    # Experiment trackers through Accelerate (ssl_bench/common/tracking.py): tensorboard, wandb, mlflow.
    trackers: list[str] = field(default_factory=list)
    # torch.compile the backbone and the head (one graph per crop size); the first steps pay the compilation.
    compile: bool = False
    # The torch.compile backend: inductor generates kernels; aot_eager only traces (checks, debugging).
    compile_backend: str = "inductor"
    # Backbone weights and crops in channels-last (NHWC) memory format: faster convolutions on tensor cores.
    channels_last: bool = False
    # Guardrails after each epoch (ssl_bench/training/health.py, thresholds in health.*): warn = one line naming
    # the usual causes and keys, and an entry in the record; stop = the same, then stop the run; off = nothing.
    guardrails: str = "warn"


@dataclass
class EvalConfig:
    """Evaluation protocols on the backbone's pooled features (ssl_bench/evaluation). The defaults are the papers'
    protocols (SwAV A.3 linear, A.4 semi-supervised); CPU budgets override them with smaller settings."""

    # Protocols run at the end of ssl_bench.run (kNN always runs there: the flat metrics.knn_top1* come from it);
    # `python -m ssl_bench.evaluate eval=...` runs any of them later. Choices: knn, linear, finetune, supervised.
    protocols: list[str] = field(default_factory=lambda: ["knn"])
    # The network evaluated (final evaluation, random-init floor and the kNN monitor): student, or teacher for a method
    # with a momentum teacher; null = the one the method's paper reports (its MomentumTeacher.evaluate, else student).
    network: str | None = None
    # Each protocol is repeated per seed (subset and label-split draws, classifier init and batch order); the
    # record holds the mean and, with several seeds, the sample standard deviation (<key>_std).
    seeds: list[int] = field(default_factory=lambda: [0])
    # Weighted kNN (cosine, weight exp(sim / T)); every k shares one feature extraction. The first k is the
    # headline metrics.knn_top1.
    knn_k: list[int] = field(default_factory=lambda: [20, 10, 100, 200])
    knn_temperature: float = 0.07
    # Labeled images for the frozen-feature protocols (kNN and linear probe; the test subset also for
    # fine-tuning): fixed subsets drawn with data.subset_seed + eval seed (0 = whole split).
    knn_train_subset: int = 0
    knn_test_subset: int = 0
    # Online kNN monitor after each epoch (on the subsets below; 0 turns it off).
    monitor_train_subset: int = 0
    monitor_test_subset: int = 0
    # Global batch for feature extraction.
    batch_size: int = 256
    # Every protocol also on the randomly initialised backbone (same architecture, seed), the floor of a table.
    random_baseline: bool = True
    # Reuse the floor of an identical earlier evaluation (same dataset, backbone, seed, eval settings, precision
    # and device type), kept in <output_dir>/../baselines/; the record says where a floor came from.
    baseline_cache: bool = True
    # Linear probe (SwAV A.3): SGD (momentum), cosine decay, 100 epochs, lr 0.3, wd 1e-6, batch 256.
    # 'augmented' = RandomResizedCrop + flip through the frozen backbone each epoch (the paper's protocol);
    # 'cached' = the features extracted once, no augmentation (fast: CPU budgets and sweeps).
    linear_mode: str = "augmented"
    linear_epochs: int = 100
    linear_lr: float = 0.3
    linear_weight_decay: float = 1.0e-6
    linear_momentum: float = 0.9
    linear_batch_size: int = 256
    # A BatchNorm without affine parameters before the linear layer (MAE / MoCo v3 probes): the classifier is
    # still linear at test time and the lr does not depend on the scale of a backbone's features.
    linear_bn: bool = True
    # Semi-supervised fine-tuning (SwAV A.4): stratified label fractions of the train split, 20 epochs,
    # SGD without weight decay, separate lr for backbone and head (one per fraction), x0.2 at epochs 12, 16.
    finetune_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])
    finetune_lr_backbone: list[float] = field(default_factory=lambda: [0.02, 0.01])
    finetune_lr_head: list[float] = field(default_factory=lambda: [5.0, 0.2])
    finetune_epochs: int = 20
    finetune_milestones: list[int] = field(default_factory=lambda: [12, 16])
    finetune_gamma: float = 0.2
    finetune_momentum: float = 0.9
    finetune_weight_decay: float = 0.0
    finetune_batch_size: int = 256
    # RandomResizedCrop scale for the augmented linear probe, fine-tuning and the supervised reference.
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    # Supervised reference ('supervised'): the same backbone trained with labels on the pretraining images
    # for the budget's epochs and batch (SGD, cosine), then evaluated like the others: the ceiling of a table.
    supervised_lr: float = 0.1
    supervised_weight_decay: float = 5.0e-4
    # Label-subset index files (<splits_dir>/<dataset>/<fraction>_seed<k>.json); null = results/splits
    # beside the runs folder (output_dir/../splits).
    splits_dir: str | None = None
    # Features larger than this (float32 in memory: 4 bytes x dim per image) are streamed to a float16 file
    # on disk instead (2 bytes x dim per image).
    feature_memory_mb: int = 4096


@dataclass
class HealthConfig:
    """Is the run learning? Measured after each epoch without touching training (ssl_bench/training/health.py): a run's
    weights and losses are the same with any of these settings."""

    # Label-free health (effective rank, alignment, uniformity, std) on this many pretraining images drawn with
    # data.subset_seed, two augmented views each from their own seed (0 = off).
    samples: int = 256
    # Online linear probe (online_linear_top1) fitted each epoch on the kNN monitor's features and labels
    # (eval.monitor_train_subset, tested on eval.monitor_test_subset; off without the monitor).
    linear_probe: bool = True
    probe_steps: int = 100
    probe_lr: float = 0.1
    # Guardrails (train.guardrails): the loss within this fraction of ln(K) for this many epochs in a row ...
    uniform_tolerance: float = 0.01
    uniform_epochs: int = 2
    # ... fewer prototypes in use than this fraction of K ...
    min_prototypes_fraction: float = 0.1
    # ... an effective rank of the projections or the backbone features below this (1 = a single direction) ...
    min_rank: float = 1.5
    # ... or of the projections below this fraction of the rank they could have, min(health.samples, head.out_dim):
    # at the demo budget healthy runs of the five methods stay >= 10 of 128 (8%), while SwAV with an early queue,
    # unfrozen prototypes and a 10x lr sits at 3 (2.5%) without reaching min_rank (2026-12-04 evidence runs).
    min_rank_fraction: float = 0.05
    # ... or nothing moves (not_learning, ssl_bench/training/learning.py), judged at epoch flat_epochs: the loss did
    # not fall (where the budget has healthy records: an upper bound on its fall, fall + flat_z sqrt(2) standard
    # errors (loss_sem), below flat_fraction of the smallest fall healthy runs show, healthy_reference.json; else
    # no fall beyond flat_z sqrt(2) standard errors) and neither the alignment, the online probe nor the monitor
    # kNN improved by more than flat_z sqrt(2) times its own noise.
    flat_epochs: int = 3
    flat_z: float = 3.0
    flat_fraction: float = 0.5


@dataclass
class RunConfig:
    method: Any = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    crops: dict[str, CropSpec] = field(default_factory=_default_crops)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    seed: int = 0
    # Continue the run from its last checkpoint.
    resume: bool = False
    # Train again even if a finished record of the same config exists.
    overwrite: bool = False
    output_dir: str = "results/runs"
    # Default (ssl_bench/records/identity.py): <method>-<dataset>-<budget>[-<keys that differ from the budget>]-s<seed>-
    # <configuration id>, so the same config finds the same folder.
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Print the whole resolved config at the start of a run (by default one line says what runs and where).
    print_config: bool = False
