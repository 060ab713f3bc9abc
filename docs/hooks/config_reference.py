"""MkDocs hook: the reference of every run config key, generated from the schema when the site is built.

docs/configuration.md holds the prose (where defaults come from, the override order, the environment variables) and
the line ``<!-- configuration-keys -->``, which this hook replaces with one table per section of the run config:
every key of ``ssl_bench.config.schema.RunConfig`` and of each registered objective's config dataclass, with

- its default, read from the dataclass (the one place defaults are declared);
- its meaning: the comment written above the field in the source (``ssl_bench/config/schema.py``,
  ``methods/<name>.py``);
  for a field the source leaves without one, the short text in ``MEANINGS`` below (or the comment beside the field,
  or the line ``python -m ssl_bench.run --help`` prints for it, ``ssl_bench.config.help.MAIN_KEYS``); its valid
  choices where the schema names them; whether it is part of a run's *configuration*;
- which shipped config files set it, with their values: the budgets, datasets and backbones of ``experiments/``, and
  ``experiments/method_budget/<method>_<budget>.yaml`` for an objective's keys.

So the page cannot drift from the code: a key added to the schema appears at the next build, and
``tests/test_docs.py`` fails if a key of the schema is missing from the built page or has no meaning (write a comment
above the field), or if ``MEANINGS`` names a key the schema no longer has.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "<!-- configuration-keys -->"
ROOT = Path(__file__).resolve().parents[2]

# Meanings of the fields that ssl_bench/config/schema.py and methods/<name>.py leave without a comment (a comment
# written there later wins over these). Keys are run config keys; an objective's are "<method>:method.<field>".
MEANINGS = {
    "dataset.name": "The dataset: set by the `dataset` group (`dataset=cifar10`), never on its own.",
    "dataset.num_classes": "Classes of the labelled splits (evaluation); follows `dataset.classes` when that is set.",
    "dataset.mean": "Per-channel mean used to normalise the images (RGB).",
    "dataset.std": "Per-channel standard deviation used to normalise the images (RGB).",
    "dataset.train_split": "The labelled split the evaluation protocols fit on (kNN bank, linear probe, fine-tuning).",
    "dataset.test_split": "The labelled split the evaluation protocols are scored on.",
    "dataset.label_key": "Hugging Face datasets (`dataset=hf`): the column holding the label.",
    "data.subset_seed": "Seed of the pretraining subset (`data.train_subset`) and of the evaluation subsets; the same "
                        "for every method and seed, so a comparison sees the same images.",
    "crops.global.n": "Global (large) crops per image; targets and codes are computed on them. At least 1.",
    "crops.global.size": "Side of a global crop in pixels.",
    "crops.global.scale": "RandomResizedCrop's area range of a global crop, as fractions of the image.",
    "crops.local.n": "Local (small) crops per image, multi-crop's extra views; 0 turns multi-crop off.",
    "crops.local.size": "Side of a local crop in pixels.",
    "crops.local.scale": "RandomResizedCrop's area range of a local crop, as fractions of the image.",
    "augment.color_jitter_prob": "Probability of colour jitter on a crop.",
    "augment.color_jitter_strength": "Strength s of SimCLR's colour jitter (brightness, contrast, saturation 0.8 s; "
                                     "hue 0.2 s).",
    "augment.grayscale_prob": "Probability of turning a crop grey.",
    "augment.blur_prob": "Probability of a Gaussian blur on a crop (0 for small images).",
    "augment.blur_sigma": "Range the blur's sigma is drawn from.",
    "backbone.name": "The backbone: set by the `backbone` group, which a budget chooses (`small_cnn`, `resnet18`, "
                     "`resnet50`).",
    "head.out_dim": "Dimension D of the projections the objective sees (and of its prototypes).",
    "optim.name": "The optimiser.",
    "optim.final_lr": "The learning rate the cosine schedule ends at.",
    "optim.warmup_epochs": "Epochs of linear warm-up from `optim.start_warmup_lr` to `optim.lr` (fractions allowed).",
    "optim.start_warmup_lr": "The learning rate at the first step of the warm-up.",
    "optim.momentum": "Momentum of SGD and LARS.",
    "optim.weight_decay": "Weight decay (decoupled for AdamW).",
    "optim.lars_trust_coefficient": "LARS's trust coefficient (the layer-wise rate is this x ||w|| / ||g||).",
    "optim.betas": "AdamW's betas.",
    "train.epochs": "Pretraining epochs.",
    "train.grad_accum": "Gradient accumulation: the optimiser steps every N batches of `data.batch_size` (the "
                        "objective still sees one batch at a time, so this is not a larger batch for it).",
    "eval.knn_temperature": "Temperature T of the weighted kNN vote, weight exp(similarity / T).",
    "eval.knn_test_subset": "Test images for the kNN and the linear probe (0 = the whole split); see "
                            "`eval.knn_train_subset`.",
    "eval.monitor_test_subset": "Test images of the per-epoch kNN monitor; see `eval.monitor_train_subset`.",
    "eval.linear_epochs": "Epochs of the linear probe.",
    "eval.linear_lr": "Learning rate of the linear probe.",
    "eval.linear_weight_decay": "Weight decay of the linear probe.",
    "eval.linear_momentum": "SGD momentum of the linear probe.",
    "eval.linear_batch_size": "Batch of the linear probe.",
    "eval.finetune_lr_backbone": "Fine-tuning: the backbone's learning rate, one per label fraction.",
    "eval.finetune_lr_head": "Fine-tuning: the classifier's learning rate, one per label fraction.",
    "eval.finetune_epochs": "Fine-tuning epochs.",
    "eval.finetune_milestones": "Fine-tuning: epochs at which the learning rates are multiplied by "
                                "`eval.finetune_gamma`.",
    "eval.finetune_gamma": "Fine-tuning: the learning-rate factor at each milestone.",
    "eval.finetune_momentum": "Fine-tuning: SGD momentum.",
    "eval.finetune_weight_decay": "Fine-tuning: weight decay.",
    "eval.finetune_batch_size": "Fine-tuning: batch.",
    "eval.supervised_weight_decay": "Weight decay of the supervised reference.",
    "health.uniform_epochs": "Guardrail `uniform_codes`: epochs in a row the loss must stay within "
                             "`health.uniform_tolerance` of ln(K) before it trips.",
    "health.probe_steps": "Steps of the per-epoch online linear probe.",
    "health.probe_lr": "Learning rate of the per-epoch online linear probe.",
    "seed": "The training seed: initialisation, data order and crops. Runs that differ only in it are seeds of one "
            "configuration.",
    "run_id": "The run's folder name; `null` derives it from the config. {comment}",
    "tags": "Free-form labels kept in the record (sweeps set `tags.sweep`, `tags.study`, `tags.trial`).",
    # The objectives' keys.
    "swav:method.num_prototypes": "Prototypes K (the SwAV paper: 3000 on ImageNet).",
    "swav:method.temperature": "Temperature tau of the softmax over prototype scores.",
    "swav:method.epsilon": "Entropy weight of Sinkhorn-Knopp: smaller is closer to hard, balanced codes.",
    "swav:method.sinkhorn_iterations": "Sinkhorn-Knopp iterations per batch.",
    "swav:method.hard_codes": "Ablation: round each code to one-hot before it is predicted (the paper's Table 13).",
    "swav:method.fixed_prototypes": "Ablation: random prototypes that are never trained (the paper's Table 13).",
    "swav:method.queue_start_epoch": "The epoch from which the queue is used (it fills before).",
    "swav:method.freeze_prototypes_iters": "Optimiser steps during which the prototypes get no gradient (the paper: "
                                           "the first epoch).",
    "simclr:method.temperature": "Temperature of the NT-Xent loss.",
    "deepclusterv2:method.num_heads": "Clusterings run side by side (the SwAV paper: 3 heads of 3000).",
    "deepclusterv2:method.num_prototypes": "Clusters K of each head's k-means.",
    "deepclusterv2:method.temperature": "Temperature of the softmax over centroid scores.",
    "deepclusterv2:method.kmeans_iters": "k-means iterations at the start of each epoch on the memory bank.",
    "deepclusterv2:method.bank_dtype": "Storage type of the memory bank (`float32` or `float16`).",
    "selav2:method.num_heads": "Labellings run side by side (the SwAV paper: 3 heads of 3000).",
    "selav2:method.num_prototypes": "Pseudo-classes K of each head.",
    "selav2:method.temperature": "Temperature of the softmax over prototype scores.",
    "selav2:method.sinkhorn_iterations": "Sinkhorn-Knopp iterations of each epoch's labelling.",
    "selav2:method.bank_dtype": "Storage type of the memory bank (`float32` or `float16`).",
    "carl:method.num_prototypes": "General prototypes K.",
    "carl:method.lambda_start": "Weight of the KL term at the first epoch (the paper's b).",
    "carl:method.lambda_end": "Weight of the KL term after `method.lambda_epochs` epochs (the paper's a).",
    "carl:method.lambda_epochs": "Epochs over which the KL weight decays linearly from `lambda_start` to `lambda_end` "
                                 "(the paper's E; 0 = constant `lambda_end`).",
    "carl:method.kl_mode": "`per_view` (the paper's Eq. 5) or `pooled` (one KL of the mean over all crops' "
                           "predictions).",
}

# Keys whose valid values the schema names (ssl_bench.config.schema's constants), and the groups that set a key by
# choice.
CHOICES = {"backbone.name": "BACKBONES", "optim.name": "OPTIMIZERS", "train.precision": "PRECISIONS",
           "augment.backend": "AUGMENT_BACKENDS", "train.compile_backend": "COMPILE_BACKENDS",
           "train.guardrails": "GUARDRAILS", "eval.protocols": "EVAL_PROTOCOLS", "eval.linear_mode": "LINEAR_MODES"}
GROUP_KEYS = {"dataset.name": "dataset", "backbone.name": "backbone"}
SOURCE_GROUPS = ("budget", "dataset", "backbone")  # the config files whose values the "set by" column lists


@dataclass
class Key:
    key: str  # as on the command line: data.batch_size
    default: Any
    meaning: str
    anchor: str  # the id of its row: the key itself, or <method>.<field> for an objective's keys
    choices: list[str] = field(default_factory=list)
    configuration: bool = True  # part of a run's configuration (ssl_bench.config.schema.NON_CONFIGURATION_KEYS)
    set_by: dict[str, dict[str, Any]] = field(default_factory=dict)  # group -> option -> value


# -- reading the source ---------------------------------------------------------------------------------------------
def field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """The comments of each field of a dataclass: (the comment lines right above it, the one beside it)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    out = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        above, line = [], node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        beside = comments.get(node.lineno, "") if node.lineno in code_lines else ""
        if above or beside:
            out[node.target.id] = (_join(above), beside.strip())
    return out


def _join(lines: list[str]) -> str:
    """Comment lines as one text: a line broken after a hyphen (``-s<seed>-``) joins without a space."""
    text = ""
    for line in lines:
        text += line if text.endswith("-") and not text.endswith(" -") else (" " if text else "") + line
    return text.strip()


def _class_doc(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(cls.__name__ + "(") else " ".join(doc.split())  # dataclass's generated signature


# -- the keys -------------------------------------------------------------------------------------------------------
def _meaning(key: str, comment: tuple[str, str] | None, main_keys: dict[str, str], lookup: str | None = None) -> str:
    """The comment above the field (with the one beside it); else MEANINGS (where ``{comment}`` takes the source's
    comments); else the comment beside the field (often a terse note, such as the paper's symbol); else --help's."""
    above, beside = comment or ("", "")
    fallback = MEANINGS.get(lookup or key)
    if fallback and "{comment}" in fallback:
        text = fallback.replace("{comment}", f"{above} {beside}".strip())
    elif above:
        text = f"{above} {beside}".strip()
    else:
        text = fallback or beside or main_keys.get(key, "")
    return text[:1].upper() + text[1:]


def _is_configuration(key: str, non_configuration: tuple[str, ...]) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in non_configuration)


def schema_sections() -> list[tuple[str, str, list[Key]]]:
    """(section, its description, its keys) for the top level and each part of RunConfig, in the schema's order."""
    from ssl_bench.config import schema
    from ssl_bench.config.help import MAIN_KEYS

    top: list[Key] = []
    sections: list[tuple[str, str, list[Key]]] = []
    instance = schema.RunConfig()
    top_comments = field_comments(schema.RunConfig)

    def key(name: str, default: Any, comment: str | None) -> Key:
        choices = list(getattr(schema, CHOICES[name])) if name in CHOICES else []
        return Key(name, default, _meaning(name, comment, MAIN_KEYS), name, choices,
                   _is_configuration(name, schema.NON_CONFIGURATION_KEYS))

    for f in dataclasses.fields(schema.RunConfig):
        value = getattr(instance, f.name)
        if f.name == "method":
            continue  # one section per objective, below
        if dataclasses.is_dataclass(value):
            comments = field_comments(type(value))
            keys = [key(f"{f.name}.{g.name}", getattr(value, g.name), comments.get(g.name))
                    for g in dataclasses.fields(value)]
            sections.append((f.name, _class_doc(type(value)), keys))
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            keys = []
            for part, spec in value.items():
                comments = field_comments(type(spec))
                keys += [key(f"{f.name}.{part}.{g.name}", getattr(spec, g.name), comments.get(g.name))
                         for g in dataclasses.fields(spec)]
            sections.append((f.name, "", keys))
        else:
            top.append(key(f.name, value, top_comments.get(f.name)))
    return [("top level", "Keys outside any section.", top), *sections]


def method_sections() -> list[tuple[str, str, list[Key]]]:
    """(method, its config class's path, its keys) for every registered objective, in the suite's order."""
    from ssl_bench.analysis.report import method_order
    from ssl_bench.config.help import MAIN_KEYS
    from ssl_bench.config.registry import registry

    entries = registry()
    out = []
    for name in method_order(entries):
        entry = entries[name]
        comments = field_comments(entry.config)
        keys = [Key(f"method.{g.name}", g.default, _meaning(f"method.{g.name}", comments.get(g.name), MAIN_KEYS,
                                                            f"{name}:method.{g.name}"), f"{name}.{g.name}")
                for g in dataclasses.fields(entry.config) if g.name != "name"]
        out.append((name, f"{entry.config.__module__}.{entry.config.__qualname__}", keys))
    return out


# -- the config files that set keys ---------------------------------------------------------------------------------
def _package(text: str, group: str) -> str:
    m = re.search(r"^#\s*@package\s+(\S+)", text, re.M)
    package = m[1] if m else group
    return "" if package == "_global_" else package + "."


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def group_file_keys(group: str, name: str) -> dict[str, Any]:
    """The keys experiments/<group>/<name>.yaml sets, with the files it includes from its own group first and the
    backbone it chooses (``override /backbone: x``) as ``backbone.name``."""
    import yaml

    from ssl_bench.config.searchpath import EXPERIMENTS_DIR

    path = EXPERIMENTS_DIR / group / f"{name}.yaml"
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    keys: dict[str, Any] = {}
    for entry in data.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_" and (EXPERIMENTS_DIR / group / f"{entry}.yaml").is_file():
            keys.update(group_file_keys(group, entry))
        elif isinstance(entry, dict):
            for k, v in entry.items():
                if k.replace("override", "").strip().strip("/") == "backbone":
                    keys["backbone.name"] = v
    keys.update(_flatten(data, _package(text, group)))
    return keys


def setters() -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, dict[str, Any]]]]:
    """key -> group -> option -> value for the run keys (budgets, datasets, backbones), and
    method -> key -> {budget: value} from experiments/method_budget/<method>_<budget>.yaml."""
    from ssl_bench.config.registry import registry
    from ssl_bench.config.searchpath import EXPERIMENTS_DIR

    run: dict[str, dict[str, dict[str, Any]]] = {}
    for group in SOURCE_GROUPS:
        for path in sorted((EXPERIMENTS_DIR / group).glob("*.yaml")):
            for k, v in group_file_keys(group, path.stem).items():
                run.setdefault(k, {}).setdefault(group, {})[path.stem] = v
    budgets = {p.stem for p in (EXPERIMENTS_DIR / "budget").glob("*.yaml")}
    per_method: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted((EXPERIMENTS_DIR / "method_budget").glob("*.yaml")):
        method = next((m for m in sorted(registry(), key=len, reverse=True)
                       if path.stem.startswith(m + "_") and path.stem[len(m) + 1:] in budgets), None)
        if method is None:
            continue
        for k, v in group_file_keys("method_budget", path.stem).items():
            per_method.setdefault(method, {}).setdefault(k, {})[path.stem[len(method) + 1:]] = v
    return run, per_method


# -- Markdown -------------------------------------------------------------------------------------------------------
def value_text(value: Any) -> str:
    if value == "???":
        return "*required*"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple | dict):
        return "`" + json.dumps(value).replace('"', "") + "`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Text for a table cell: ``<`` and ``>`` outside code spans as entities (``<method>`` is a placeholder)."""
    parts = re.split(r"(`+[^`]*`+|<br>|<code[^>]*>|</code>|\[[^\]]*\]\([^)]*\))", text.replace("\n", " "))
    kept = ("`", "<br>", "<code", "</code>", "[")
    escaped = (p if p.startswith(kept) else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)
    return "".join(escaped).replace("|", "\\|")


def _set_by(groups: dict[str, dict[str, Any]]) -> str:
    parts = []
    order = (*SOURCE_GROUPS, "method_budget")
    for group in sorted(groups, key=order.index):
        options = groups[group]
        parts.append(f"**{group}** " + ", ".join(f"{o} {value_text(v)}" for o, v in sorted(options.items())))
    return "<br>".join(parts) or "—"


def table(keys: list[Key]) -> str:
    rows = ["| key | default | meaning | set by |", "| --- | --- | --- | --- |"]
    for k in keys:
        meaning = k.meaning.rstrip(".") + "." if k.meaning else ""
        if k.choices:
            meaning += " Choices: " + ", ".join(f"`{c}`" for c in k.choices) + "."
        if not k.configuration:
            meaning += " *Not part of the run's [configuration](glossary.md#configuration).*"
        rows.append(f'| <code id="{k.anchor}">{k.key}</code> | {value_text(k.default)} | {_cell(meaning.strip())} | '
                    f"{_cell(_set_by(k.set_by))} |")
    return "\n".join(rows)


def reference_markdown() -> str:
    run_setters, method_setters = setters()
    out = []
    for section, about, keys in schema_sections():
        for k in keys:
            k.set_by = run_setters.get(k.key, {})
            if k.key in GROUP_KEYS:  # chosen by its group: the choices are the group's files, not values they set
                k.choices = sorted({*k.choices, *[p.stem for p in _group_files(GROUP_KEYS[k.key])]})
                k.set_by.pop(GROUP_KEYS[k.key], None)
        title = "Top level" if section == "top level" else f"`{section}`"
        out += [f"### {title}", "", *([about, ""] if about else []), table(keys), ""]
    out += ["## Objectives' keys (`method.*`)", "",
            "Each objective declares its keys and defaults once, in its config dataclass; `method=<name>` chooses "
            "them. Budget-dependent values come from `experiments/method_budget/<method>_<budget>.yaml`, listed "
            "in the last column by budget.", ""]
    for name, config, keys in method_sections():
        for k in keys:
            budgets = method_setters.get(name, {}).get(k.key, {})
            k.set_by = {"method_budget": budgets} if budgets else {}
        out += [f"### `method={name}`", "", f"Defaults: [`{config.rsplit('.', 1)[1]}`][{config}] "
                f"(`{config.rsplit('.', 1)[0]}`).", "", table(keys), ""]
    return "\n".join(out)


def _group_files(group: str) -> list[Path]:
    from ssl_bench.config.searchpath import EXPERIMENTS_DIR

    return sorted((EXPERIMENTS_DIR / group).glob("*.yaml"))


def all_keys() -> list[Key]:
    """Every key the page documents (tests/test_docs.py checks them against the built page)."""
    keys = [k for _, _, ks in schema_sections() for k in ks]
    return keys + [k for _, _, ks in method_sections() for k in ks]


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference_markdown())
