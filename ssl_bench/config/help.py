"""The text of ``python -m ssl_bench.run --help``, beside the entry point it documents: the config groups with
their options (from the search path) and the main keys with their schema defaults.
"""

from __future__ import annotations

import json

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ssl_bench.config.schema import RunConfig
from ssl_bench.config.searchpath import EXPERIMENTS_DIR, GROUPS, group_options


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
    "run_id": "the run's folder name; null = derived from the config (ssl_bench/records/identity.py)",
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
