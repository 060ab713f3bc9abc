"""The papers' recipes as budgets: each composes for every method with the papers' numbers."""

from __future__ import annotations

import pytest

from ssl_bench.config.compose import compose
from ssl_bench.methods import registry

METHODS = list(registry())  # every registered objective: a new method file is checked against the recipes too

# budget -> {key: value} from the papers (SwAV A.1, A.6, Table 3; CARL A.1-A.5).
RECIPES = {
    "imagenet_400ep": {"backbone.name": "resnet50", "data.batch_size": 4096, "optim.name": "lars", "optim.lr": 4.8,
                       "optim.final_lr": 0.0048, "optim.warmup_epochs": 10, "optim.weight_decay": 1e-6,
                       "train.epochs": 400, "crops.global.n": 2, "crops.global.size": 224, "crops.local.n": 6,
                       "crops.local.size": 96, "head.hidden_dim": 2048, "head.out_dim": 128},
    "imagenet_800ep": {"data.batch_size": 4096, "optim.lr": 4.8, "train.epochs": 800, "crops.local.n": 6},
    "imagenet_bs256": {"backbone.name": "resnet50", "data.batch_size": 256, "optim.lr": 0.6, "optim.final_lr": 0.0006,
                       "optim.warmup_epochs": 0, "train.epochs": 200, "crops.local.n": 6},
    "carl_cifar10": {"backbone.name": "resnet18", "backbone.small_image_stem": True, "head.hidden_dim": 512,
                     "data.batch_size": 256, "optim.lr": 0.6, "optim.final_lr": 0.0006, "optim.weight_decay": 5e-4,
                     "train.epochs": 200, "crops.local.n": 0, "crops.global.scale": [0.08, 1.0]},
    "carl_cifar100": {"backbone.name": "resnet18", "data.batch_size": 256, "train.epochs": 200},
    "carl_stl10": {"backbone.name": "resnet18", "backbone.small_image_stem": False, "data.batch_size": 256},
}
DATASET = {"carl_cifar10": "cifar10", "carl_cifar100": "cifar100", "carl_stl10": "stl10"}
# (method, budget) -> method keys that the recipe sets for that method.
METHOD_KEYS = {
    ("swav", "imagenet_400ep"): {"num_prototypes": 3000, "freeze_prototypes_iters": 313, "queue_length": 0,
                                 "epsilon": 0.05, "temperature": 0.1, "sinkhorn_iterations": 3},
    ("swav", "imagenet_bs256"): {"queue_length": 3840, "queue_start_epoch": 15, "freeze_prototypes_iters": 5005},
    ("deepclusterv2", "imagenet_400ep"): {"num_heads": 3, "num_prototypes": 3000},
    ("selav2", "imagenet_400ep"): {"num_heads": 3, "num_prototypes": 3000},
    ("carl", "carl_cifar10"): {"num_prototypes": 100},
    ("carl", "carl_cifar100"): {"num_prototypes": 300},
    ("carl", "carl_stl10"): {"num_prototypes": 300},
    ("swav", "carl_cifar10"): {"num_prototypes": 100, "freeze_prototypes_iters": 195},
    ("swav", "carl_stl10"): {"num_prototypes": 300, "freeze_prototypes_iters": 410},
}


def get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return list(node) if hasattr(node, "__len__") and not isinstance(node, str) else node


@pytest.mark.parametrize("budget", list(RECIPES))
@pytest.mark.parametrize("method", METHODS)
def test_recipe_composes_with_the_papers_numbers(budget, method):
    cfg = compose([f"method={method}", f"budget={budget}", f"dataset={DATASET.get(budget, 'imagenet')}"])
    for key, value in RECIPES[budget].items():
        assert get(cfg, key) == pytest.approx(value), key
    for key, value in METHOD_KEYS.get((method, budget), {}).items():
        assert cfg.method[key] == value, key


def test_queue_is_a_multiple_of_the_global_batch_on_any_split():
    cfg = compose(["method=swav", "budget=imagenet_bs256", "dataset=imagenet"])
    assert cfg.method.queue_length % cfg.data.batch_size == 0  # 15 batches; per process: 3840 / N
