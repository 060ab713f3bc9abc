"""The configuration schema and its composition.

Every default of the framework is declared once, here; every default of an objective is declared once,
in its method file (``methods/<name>.py``, installed as ``ssl_bench.methods``). The YAML files in ``experiments/``
(shipped inside the installed package; more folders through $SSL_BENCH_CONFIG_PATH) only choose and override:
datasets set their image size and crop sizes, budgets fix what must be identical across methods.

``compose(["method=swav", "dataset=cifar10", "method.epsilon=0.03"])`` returns the resolved config.
Anything wrong (an unknown group option or key, a value of the wrong type or out of range) raises
:class:`ConfigError` with a one-line message that names the valid choices.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ssl_bench.errors import ConfigError, DataNotFound
from ssl_bench.registry import registry  # the one list of methods; torch-free, and no method file imports config
from ssl_bench.tracking import tracker_problem

_PACKAGE_DIR = Path(__file__).resolve().parent
# The shipped configs. A wheel carries them inside the package (pyproject maps experiments/ to ssl_bench/experiments);
# a source checkout, editable or not, has no such copy and reads experiments/ beside the package, the folder users edit.
EXPERIMENTS_DIR = next((d for d in (_PACKAGE_DIR / "experiments", _PACKAGE_DIR.parent / "experiments")
                        if (d / "config.yaml").is_file()), _PACKAGE_DIR / "experiments")
# A user's own config folders (os.pathsep-separated), each laid out like experiments/ (method/, budget/, study/,
# sweep/, ...): their files are options in addition to the shipped ones.
CONFIG_PATH_ENV = "SSL_BENCH_CONFIG_PATH"
GROUPS = ("method", "dataset", "backbone", "budget")
# Keys that cannot change a run's result: where and how it is stored, logged and shown, how many workers and
# threads compute it, and evaluation keys that only say where files go or how much memory to use. Everything else
# (and not the seed) is the run's *configuration* (ssl_bench/identity.py): runs are pooled as seeds of one
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


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


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
    # hybrid on a GPU and pil on a CPU (see ssl_bench.multicrop.resolve_backend).
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
    # CUDA: torch.nn.SyncBatchNorm; CPU (gloo): ssl_bench.syncbn.GlobalBatchNorm.
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
    # Progress bars; only ever drawn on the main process when stderr is a terminal (ssl_bench/progress.py).
    progress: bool = True
    # Same as trackers=[tensorboard] (kept for older commands).
    tensorboard: bool = False
    # Experiment trackers through Accelerate (ssl_bench/tracking.py): tensorboard, wandb, mlflow.
    trackers: list[str] = field(default_factory=list)
    # torch.compile the backbone and the head (one graph per crop size); the first steps pay the compilation.
    compile: bool = False
    # The torch.compile backend: inductor generates kernels; aot_eager only traces (checks, debugging).
    compile_backend: str = "inductor"
    # Backbone weights and crops in channels-last (NHWC) memory format: faster convolutions on tensor cores.
    channels_last: bool = False
    # Guardrails after each epoch (ssl_bench/health.py, thresholds in health.*): warn = one line naming the usual
    # causes and keys, and an entry in the record; stop = the same, then stop the run; off = nothing.
    guardrails: str = "warn"


@dataclass
class EvalConfig:
    """Evaluation protocols on the backbone's pooled features (ssl_bench/evaluation). The defaults are the papers'
    protocols (SwAV A.3 linear, A.4 semi-supervised); CPU budgets override them with smaller settings."""

    # Protocols run at the end of ssl_bench.run (kNN always runs there: the flat metrics.knn_top1* come from it);
    # `python -m ssl_bench.evaluate eval=...` runs any of them later. Choices: knn, linear, finetune, supervised.
    protocols: list[str] = field(default_factory=lambda: ["knn"])
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
    """Is the run learning? Measured after each epoch without touching training (ssl_bench/health.py): a run's
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
    # ... an effective rank of the projections or the backbone features below this (1 = a single direction).
    min_rank: float = 1.5


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
    # Default (ssl_bench/identity.py): <method>-<dataset>-<budget>[-<keys that differ from the budget>]-s<seed>-
    # <configuration id>, so the same config finds the same folder.
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Print the whole resolved config at the start of a run (by default one line says what runs and where).
    print_config: bool = False


BACKBONES = ("small_cnn", "resnet18", "resnet50")
OPTIMIZERS = ("sgd", "lars", "adamw")
PRECISIONS = ("no", "fp16", "bf16")
AUGMENT_BACKENDS = ("auto", "pil", "tensor", "hybrid", "device_decode")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
FUSED_OPTIMIZERS = ("sgd", "adamw")
GUARDRAILS = ("warn", "stop", "off")


def _register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for name, entry in registry().items():
        cs.store(group="method", name=f"{name}_schema", node=entry.config)
        if config_file("method", f"{name}.yaml") is None:  # an objective of another package: its dataclass is the
            cs.store(group="method", name=name, node=entry.config)  # option, as a YAML naming <name>_schema would be
    if "ssl_bench.yaml" not in cs.repo.get("hydra", {}).get("help", {}):
        register_help("")  # config.yaml selects it; its text costs ~0.1 s, so only `ssl_bench.run` generates it


def register_help(template: str | None = None) -> None:
    """The `python -m ssl_bench.run --help` text as Hydra's app help (hydra/help=ssl_bench), generated from the
    options on the search path and the schema (app_help) unless given."""
    ConfigStore.instance().store(group="hydra/help", name="ssl_bench", node={
        "app_name": "ssl_bench.run", "header": "", "footer": "",
        "template": app_help() if template is None else template})


# The keys `python -m ssl_bench.run --help` lists, each with its one-line meaning (the default comes from the
# schema below; the comments there say more).
MAIN_KEYS = {
    "seed": "training seed (a run's folder name ends in -s<seed>)",
    "output_dir": "where run folders (records) are written",
    "run_id": "the run's folder name; null = derived from the config (ssl_bench/identity.py)",
    "resume": "continue the run from its last checkpoint",
    "overwrite": "train again even if a finished record of the same config exists",
    "print_config": "print the whole resolved config at the start",
    "data.batch_size": "global batch over all processes",
    "data.num_workers": "loader workers per process; -1 = min(8, cores per process)",
    "data.train_subset": "pretrain on a fixed random subset of this many images; 0 = all",
    "train.epochs": "pretraining epochs",
    "train.precision": "no, fp16 or bf16; null = what accelerate config / launch says",
    "train.grad_accum": "gradient accumulation steps",
    "train.checkpoint_every": "save a checkpoint every N epochs (always at the end and on SIGTERM)",
    "train.max_steps_per_epoch": "stop each epoch after N steps; 0 = full epochs",
    "train.trackers": "Accelerate trackers: tensorboard, wandb, mlflow",
    "train.log_every": "trackers get loss and lr every N steps; 0 = per epoch only",
    "train.progress": "progress bars (only on a terminal)",
    "train.guardrails": "warn, stop or off: say (or stop) when a run visibly fails, naming causes and keys",
    "health.samples": "images for the per-epoch label-free health (effective rank, ...); 0 = off",
    "optim.name": "sgd, lars or adamw",
    "optim.lr": "learning rate at the configured global batch (never rescaled)",
    "optim.weight_decay": "weight decay",
    "optim.warmup_epochs": "linear warm-up epochs",
    "backbone.name": "small_cnn, resnet18 or resnet50",
    "backbone.sync_bn": "batch norm over the global batch; null = on with several processes",
    "augment.backend": "where crops are made: auto, pil, tensor, hybrid or device_decode",
    "train.compile": "torch.compile the backbone and head",
    "train.channels_last": "channels-last memory format for the backbone and crops",
    "optim.fused": "fused optimiser step (sgd, adamw)",
    "eval.protocols": "protocols after training: knn, linear, finetune, supervised",
    "eval.seeds": "evaluation seeds (each protocol repeated; mean and std recorded)",
    "eval.knn_k": "k's of the weighted kNN (k=20 is the headline)",
    "eval.linear_mode": "linear probe: augmented (the paper's) or cached (fast)",
    "eval.linear_epochs": "linear probe epochs",
    "eval.random_baseline": "also evaluate the randomly initialised backbone (the floor)",
}


def key_help(keys: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(key, schema default, meaning) of each key; the default is read from the schema dataclasses."""
    schema = OmegaConf.structured(RunConfig)
    rows = []
    for key, meaning in (MAIN_KEYS if keys is None else keys).items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(schema, parent) if parent else schema
        default = OmegaConf.to_container(node, resolve=False)[leaf]  # type: ignore[index]
        text = ("null" if default is None else json.dumps(default) if isinstance(default, list | dict)
                else str(default).lower() if isinstance(default, bool) else str(default))
        rows.append((key, text, meaning))
    return rows


def _default_choices() -> dict[str, str]:
    defaults = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS_DIR / "config.yaml"), resolve=False)["defaults"]
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items() if k in GROUPS}


def app_help() -> str:
    """The text of ``python -m ssl_bench.run --help`` (Hydra's help template: '$' is escaped, $FLAGS_HELP is
    Hydra's list of its own flags)."""
    chosen = _default_choices()
    groups = [f"  {g:<13} {', '.join(group_options(g))} (default {chosen.get(g, '-')})" for g in GROUPS]
    groups.append(f"  {'method_budget':<13} picked automatically: <method>_<budget>.yaml, when there is one")
    rows = key_help()
    width = max(len(f"{k}={d}") for k, d, _ in rows)
    keys = [f"  {k + '=' + d:<{width}}  {m}".rstrip() for k, d, m in rows]
    text = "\n".join([
        "ssl_bench.run: pretrain one self-supervised model, evaluate it and write its record to "
        "<output_dir>/<run> (results/runs).",
        "",
        "usage: python -m ssl_bench.run [group=option ...] [key=value ...] [+key=value] [~key]",
        "       accelerate launch [accelerate options] -m ssl_bench.run ...   (several processes, same arguments)",
        "       python -m ssl_bench.run -m method=swav,simclr seed=0,1,2      (a grid: one ordinary run per job)",
        "       ssl-bench run ...                                             (the same command)",
        "",
        "== Config groups (group=option; more options through SSL_BENCH_CONFIG_PATH) ==",
        *groups,
        "",
        "== Main keys (key=schema default; budgets and datasets set many; --cfg job shows them all) ==",
        *keys,
        "",
        "== Hydra's flags ==",
        "FLAGS_HELP_PLACEHOLDER",
    ])
    # string.Template (Hydra) reads '$'; OmegaConf reads '${'.
    return text.replace("$", "$$").replace("FLAGS_HELP_PLACEHOLDER", "$FLAGS_HELP")


def config_dirs() -> list[Path]:
    """Where configs are looked up: the shipped ones (whose config.yaml is the primary config), then the folders
    in $SSL_BENCH_CONFIG_PATH. Missing shipped configs are a ConfigError, never an empty list of choices."""
    if not (EXPERIMENTS_DIR / "config.yaml").is_file():
        raise ConfigError(f"the shipped configs are missing (no {EXPERIMENTS_DIR / 'config.yaml'}): ssl_bench is not "
                          "installed completely; reinstall it (pip install ssl_bench, or pip install . in a checkout)")
    dirs = [EXPERIMENTS_DIR.resolve()]
    for entry in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"{CONFIG_PATH_ENV}: no folder '{entry}' (folders laid out like experiments/, "
                              f"separated by '{os.pathsep}')")
        if path not in dirs:
            dirs.append(path)
    return dirs


def config_files(group: str, pattern: str = "*.yaml") -> dict[str, list[Path]]:
    """The files of a config group on the search path by file name, each with its paths (the shipped one first)."""
    found: dict[str, list[Path]] = {}
    for d in config_dirs():
        for p in sorted((d / group).glob(pattern)):
            found.setdefault(p.name, []).append(p)
    return dict(sorted(found.items()))


def config_file(group: str, name: str) -> Path | None:
    """The file ``name`` (e.g. ``smoke.yaml``) of a group on the search path, None when there is none. A name in two
    folders is a ConfigError: a user's folder adds options, it never silently loses to (or hides) a shipped one."""
    paths = [d / group / name for d in config_dirs() if (d / group / name).is_file()]
    if len(paths) > 1:
        raise ConfigError(f"{group} '{Path(name).stem}' is defined twice: {paths[0]} and {paths[1]}; rename yours "
                          f"({CONFIG_PATH_ENV} adds options to the shipped ones, it cannot replace them)")
    return paths[0] if paths else None


class ConfigGroupDir:
    """A config group folder on the search path, usable where a Path to experiments/<group> was:
    ``dir / "name.yaml"`` is that file in whichever folder holds it (the shipped path when none does) and
    ``dir.glob("*.yaml")`` yields every option once."""

    def __init__(self, group: str) -> None:
        self.group = group

    def __truediv__(self, name: str) -> Path:
        return config_file(self.group, name) or EXPERIMENTS_DIR / self.group / name

    def glob(self, pattern: str) -> Iterator[Path]:
        return (paths[0] for paths in config_files(self.group, pattern).values())

    def __str__(self) -> str:
        return " and ".join(str(d / self.group) for d in config_dirs())


def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML files in <group>/ of every config folder (see config_dirs); for
    ``method`` also every registered objective (a plug-in's config group is generated from its dataclass)."""
    options = sorted(Path(name).stem for name in config_files(group))
    if group == "method" and options:
        options = sorted({*options, *registry()})
    if not options:
        raise ConfigError(f"no {group} configs: no {group}/*.yaml in "
                          f"{', '.join(str(d) for d in config_dirs())}; reinstall ssl_bench")
    return options


def _check_unique_choices(cfg: DictConfig) -> None:
    for group, choice in cfg.hydra.runtime.choices.items():
        if choice is not None and not group.startswith("hydra"):
            config_file(group, f"{choice}.yaml")


def _searchpath_override(dirs: list[Path]) -> list[str]:
    """Hydra's own search path (appended after the primary config folder) for the user's folders."""
    if not dirs:
        return []
    quoted = ("'file://" + str(d).replace("'", "\\'") + "'" for d in dirs)  # quoted: a path may hold ',' or ' '
    return [f"hydra.searchpath=[{','.join(quoted)}]"]


def _split_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    groups, keys = {}, []
    for o in overrides:
        _check("=" in o or o.startswith("~"),
               f"cannot read '{o}': overrides are key=value, +key=value or ~key (e.g. method=swav data.batch_size=64)")
        k, v = o.split("=", 1) if "=" in o else (o, "")
        if k.lstrip("+") in GROUPS:  # ~group (no option) goes to Hydra, which says what is wrong with it
            groups[k.lstrip("+")] = v
        else:
            keys.append(o)
    return groups, keys


def _compose(overrides: list[str]) -> DictConfig:
    _register()
    primary, *user = config_dirs()
    # Inside a Hydra application's job (ssl_bench.run, a -m grid) Hydra is already initialised: compose with our
    # own instance and give the application its own back.
    gh = GlobalHydra.instance()
    app = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides + _searchpath_override(user),
                                 return_hydra_config=True)
    finally:
        if app is not None:
            gh.clear()
            gh.initialize(app)


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_settable(cfg: DictConfig, override: str) -> None:
    """``key=value`` must set a key that exists in ``cfg``: else one line naming the valid keys there."""
    key = override.split("=", 1)[0]
    if key.startswith(("+", "~")):  # adding or deleting: Hydra's own rules (caught as one line by compose)
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    while parent and not isinstance(node, DictConfig):  # name the valid keys of the deepest part that exists
        parent, _, leaf = parent.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
    value = override.split("=", 1)[1] if "=" in override else ""
    if (isinstance(node, DictConfig) and leaf in node and key not in GROUPS
            and isinstance(node._get_node(leaf), DictConfig) and not value.lstrip().startswith("{")):
        keys = ", ".join(f"{key}.{k}" for k in list(node[leaf].keys())[:4])
        raise ConfigError(f"'{override}': {key} is a section of keys, not a value; set one of them ({keys}, ...)")
    if not isinstance(node, DictConfig) or leaf not in node:
        valid = sorted(str(k) for k in node.keys() if k != "hydra") if isinstance(node, DictConfig) else []
        where = f"'{parent}'" if parent else "the top level"
        raise ConfigError(f"unknown key '{key}'; valid keys in {where}: {', '.join(valid)}")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose experiments/config.yaml with command-line overrides and validate the result."""
    overrides = list(overrides)
    for o in overrides:  # no schema default for these three (the backbone has one); method_budget is named after two
        group = o[1:].split("=", 1)[0]
        if o.startswith("~") and group in ("method", "dataset", "budget"):
            raise ConfigError(f"'{o}': every run needs a {group}; choose one with {group}=<option> (valid choices: "
                              f"{', '.join(group_options(group))})")
    groups, keys = _split_overrides(overrides)
    for group, choice in groups.items():
        options = group_options(group)
        _check(choice in options, f"unknown {group} '{choice}'; valid choices: {', '.join(options)}")
    group_overrides = [f"{g}={c}" for g, c in groups.items()]
    try:
        base = _compose(group_overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from exc
    _check_unique_choices(base)
    for o in keys:
        check_settable(base, o)
    try:
        cfg = _compose(group_overrides + keys) if keys else base
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        text = f"{_one_line(exc)}: {_one_line(cause)}" if cause is not exc else _one_line(exc)
        missing = re.search(r"Could not find '([\w/]+)/([^'/]+)'", text)  # +method_budget=nope: name the options
        if missing and missing[1] in (*GROUPS, "method_budget"):
            text += f"; valid choices: {', '.join(Path(n).stem for n in config_files(missing[1]))}"
        raise ConfigError(text) from exc
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.choices = choices
    out.overrides = overrides
    if out.dataset.classes is not None:  # num_classes follows the class list
        out.dataset.num_classes = len(_class_list(out.dataset.classes))
    validate(out)
    OmegaConf.set_struct(out, True)
    return out


def validate(cfg: DictConfig) -> None:
    """Range checks that types alone cannot express; each failure is one line naming the valid range."""
    methods = registry()
    _check(cfg.method.name in methods, f"unknown method '{cfg.method.name}'; valid: {', '.join(methods)}")
    _check(cfg.backbone.name in BACKBONES,
           f"unknown backbone.name '{cfg.backbone.name}'; valid choices: {', '.join(BACKBONES)}")
    _check(cfg.optim.name in OPTIMIZERS,
           f"unknown optim.name '{cfg.optim.name}'; valid choices: {', '.join(OPTIMIZERS)}")
    _check(cfg.train.precision is None or cfg.train.precision in PRECISIONS,
           f"unknown train.precision '{cfg.train.precision}'; valid choices: {', '.join(PRECISIONS)} "
           "(or null: accelerate's setting)")
    _check(cfg.train.log_every >= 0, f"train.log_every must be >= 0 (0: no per-step logging), "
           f"got {cfg.train.log_every}")
    problem = tracker_problem(cfg.train)
    _check(problem is None, problem or "")
    _check(cfg.augment.backend in AUGMENT_BACKENDS,
           f"unknown augment.backend '{cfg.augment.backend}'; valid choices: {', '.join(AUGMENT_BACKENDS)}")
    _check(cfg.augment.backend != "tensor" or cfg.dataset.image_size > 0,
           f"augment.backend=tensor needs fixed-size images; {cfg.dataset.name} has dataset.image_size=0 "
           "(use pil or hybrid)")
    _check(cfg.augment.backend != "device_decode" or (cfg.dataset.image_size == 0 and not cfg.dataset.streaming),
           f"augment.backend=device_decode decodes image files; {cfg.dataset.name} "
           f"{'is streamed' if cfg.dataset.streaming else 'is held as pixels'} (use tensor, pil or hybrid)")
    _check(cfg.train.compile_backend in COMPILE_BACKENDS, f"unknown train.compile_backend "
           f"'{cfg.train.compile_backend}'; valid choices: {', '.join(COMPILE_BACKENDS)}")
    _check(not cfg.optim.fused or cfg.optim.name in FUSED_OPTIMIZERS,
           f"optim.fused=true: {cfg.optim.name} has no fused version (lightly's LARS updates parameter by parameter); "
           f"fused works with {', '.join(FUSED_OPTIMIZERS)}")
    _check(cfg.data.batch_size > 0, f"data.batch_size must be > 0, got {cfg.data.batch_size}")
    _check(cfg.train.epochs > 0, f"train.epochs must be > 0, got {cfg.train.epochs}")
    _check(cfg.train.guardrails in GUARDRAILS, f"unknown train.guardrails '{cfg.train.guardrails}'; valid choices: "
           f"{', '.join(GUARDRAILS)}")
    h = cfg.health
    _check(h.samples >= 0 and h.probe_steps >= 0 and h.uniform_epochs >= 1 and h.probe_lr > 0,
           "health.samples and health.probe_steps must be >= 0, health.uniform_epochs >= 1, health.probe_lr > 0")
    _check(h.samples != 1, "health.samples must be 0 (off) or >= 2: uniformity needs pairs of images")
    _check(cfg.train.grad_accum >= 1, f"train.grad_accum must be >= 1, got {cfg.train.grad_accum}")
    _check(cfg.train.checkpoint_every >= 0, "train.checkpoint_every must be >= 0 (0: only at the end)")
    _check(cfg.optim.lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}")
    _check(cfg.optim.final_lr >= 0 and cfg.optim.weight_decay >= 0, "optim.final_lr and weight_decay must be >= 0")
    _check(cfg.optim.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0")
    _check(cfg.head.hidden_dim > 0 and cfg.head.out_dim > 0, "head.hidden_dim and head.out_dim must be > 0")
    _check(set(cfg.crops.keys()) == {"global", "local"},
           f"crops must have exactly 'global' and 'local', got {', '.join(cfg.crops.keys())}")
    _check(cfg.crops["global"].n >= 1, f"crops.global.n must be >= 1, got {cfg.crops['global'].n}")
    _check(cfg.crops["local"].n >= 0, f"crops.local.n must be >= 0, got {cfg.crops['local'].n}")
    for kind, spec in cfg.crops.items():
        lo, hi = (list(spec.scale) + [None, None])[:2]
        _check(len(spec.scale) == 2 and 0 < lo <= hi <= 1,
               f"crops.{kind}.scale must be [min, max] with 0 < min <= max <= 1, got {list(spec.scale)}")
        _check(spec.size > 0, f"crops.{kind}.size must be > 0, got {spec.size}")
        if cfg.dataset.image_size > 0 and spec.n > 0:
            _check(spec.size <= cfg.dataset.image_size,
                   f"crops.{kind}.size={spec.size} is larger than the {cfg.dataset.name} images "
                   f"({cfg.dataset.image_size} px); valid: 1..{cfg.dataset.image_size}")
    _validate_dataset(cfg)
    _validate_eval(cfg.eval)
    for key in ("train_subset",):
        _check(cfg.data[key] >= 0, f"data.{key} must be >= 0 (0 = all)")
    methods[cfg.method.name].validate(cfg)


CLASS_LIST_DATASETS = ("imagenet", "imagenet100", "imagefolder", "tiny_imagenet")


def _class_list(spec: Any) -> list[str]:
    from ssl_bench.data.sources import read_class_list

    _check(isinstance(spec, str | ListConfig | list),
           f"dataset.classes must be a file of class names or a list of them, got {spec!r}")
    try:
        return read_class_list(spec)
    except DataNotFound as exc:
        raise ConfigError(str(exc)) from exc


def _validate_dataset(cfg: DictConfig) -> None:
    d = cfg.dataset
    if d.classes is not None:
        _check(d.name in CLASS_LIST_DATASETS, f"dataset.classes selects classes of image-folder datasets "
               f"({', '.join(CLASS_LIST_DATASETS)}); {d.name} does not support it")
        k = len(_class_list(d.classes))
        _check(d.num_classes == k, f"dataset.num_classes={d.num_classes} but dataset.classes lists {k} classes")
    _check(d.num_examples >= 0, f"dataset.num_examples must be >= 0 (0 = from the dataset's info), "
           f"got {d.num_examples}")
    if not d.streaming:
        return
    _check(d.name == "hf", f"dataset.streaming=true streams Hugging Face datasets (dataset=hf); {d.name} is read "
           "from local files")
    _check(len(d.pretrain_splits) == 1, f"dataset.streaming=true streams one pretraining split, got "
           f"dataset.pretrain_splits={list(d.pretrain_splits)}")
    _check(d.shuffle_buffer >= 1, f"dataset.shuffle_buffer must be >= 1, got {d.shuffle_buffer}")
    method = cfg.method.name
    _check(not getattr(registry()[method].cls, "needs_full_pass", False),
           f"method {method} needs every pretraining image by index (a memory bank filled by a full pass over the "
           f"data), which a stream cannot give; use dataset.streaming=false")


EVAL_PROTOCOLS = ("knn", "linear", "finetune", "supervised")
LINEAR_MODES = ("cached", "augmented")


def _validate_eval(e: DictConfig) -> None:
    bad = [p for p in e.protocols if p not in EVAL_PROTOCOLS]
    _check(not bad, f"unknown eval protocol '{bad[0] if bad else ''}'; valid choices: {', '.join(EVAL_PROTOCOLS)}")
    _check(len(e.seeds) > 0, "eval.seeds must list at least one seed, e.g. [0, 1, 2]")
    _check(len(e.knn_k) > 0 and all(k > 0 for k in e.knn_k), f"eval.knn_k values must be > 0, got {list(e.knn_k)}")
    _check(e.knn_temperature > 0, "eval.knn_temperature must be > 0")
    for key in ("knn_train_subset", "knn_test_subset", "monitor_train_subset", "monitor_test_subset"):
        _check(e[key] >= 0, f"eval.{key} must be >= 0 (0 = all)")
    for key in ("batch_size", "linear_epochs", "linear_batch_size", "finetune_epochs", "finetune_batch_size",
                "feature_memory_mb"):
        _check(e[key] > 0, f"eval.{key} must be > 0, got {e[key]}")
    for key in ("linear_lr", "supervised_lr", "finetune_gamma"):
        _check(e[key] > 0, f"eval.{key} must be > 0, got {e[key]}")
    for key in ("linear_weight_decay", "linear_momentum", "finetune_momentum", "finetune_weight_decay",
                "supervised_weight_decay"):
        _check(e[key] >= 0, f"eval.{key} must be >= 0, got {e[key]}")
    _check(e.linear_mode in LINEAR_MODES,
           f"unknown eval.linear_mode '{e.linear_mode}'; valid choices: {', '.join(LINEAR_MODES)}")
    fr = list(e.finetune_fractions)
    _check(len(fr) > 0 and all(0 < f <= 1 for f in fr),
           f"eval.finetune_fractions must be in (0, 1] (e.g. [0.01, 0.1] for 1% and 10%), got {fr}")
    _check(len(e.finetune_lr_backbone) == len(fr) and len(e.finetune_lr_head) == len(fr),
           f"eval.finetune_lr_backbone and eval.finetune_lr_head need one lr per fraction ({len(fr)}: {fr})")
    _check(all(x > 0 for x in [*e.finetune_lr_backbone, *e.finetune_lr_head]), "eval.finetune_lr_* must be > 0")
    _check(all(m > 0 for m in e.finetune_milestones), "eval.finetune_milestones must be epochs > 0")
    lo, hi = (list(e.crop_scale) + [None, None])[:2]
    _check(len(e.crop_scale) == 2 and 0 < lo <= hi <= 1,
           f"eval.crop_scale must be [min, max] with 0 < min <= max <= 1, got {list(e.crop_scale)}")
