"""`ssl-bench check-method`: every shipped objective passes it, and it catches an objective that misbehaves."""

from dataclasses import dataclass

import pytest
from torch import nn

from ssl_bench.analysis import conformance
from ssl_bench.analysis.conformance import Report, Result, check_method
from ssl_bench.config import registry as reg
from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Method

SHIPPED = ["swav", "simclr", "deepclusterv2", "selav2", "carl", "dino", "byol", "barlow_twins"]
CHECKS = ["config", "crops", "gradients", "resume", "seed", "diagnostics", "teacher", "processes"]
TEACHERS = ("dino", "byol")


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_objective_passes(name, tmp_path):
    report = check_method(name, workdir=tmp_path)
    assert report.passed, report.table()
    assert [r.check for r in report.results] == CHECKS
    status = {r.check: r.status for r in report.results}
    assert status["processes"] == "pass"  # two processes really ran
    # SimCLR and the three objectives without clusters have no prototypes
    assert status["diagnostics"] == ("skip" if name in ("simclr", "dino", "byol", "barlow_twins") else "pass")
    assert status["teacher"] == ("pass" if name in TEACHERS else "skip")
    assert "no check fails" in report.table().splitlines()[-1]


@dataclass
class DetachedConfig:
    name: str = "detached"
    num_prototypes: int = 4

    def __post_init__(self) -> None:
        if self.num_prototypes <= 0:
            raise ConfigError(f"method.num_prototypes must be > 0, got {self.num_prototypes}")


class Detached(Method):
    """Clusters (it has prototypes) but reports no diagnostics, and its loss never reaches the backbone."""

    def __init__(self, embed_dim: int, *, num_prototypes: int = 4) -> None:
        super().__init__(embed_dim)
        self.prototypes = nn.Linear(embed_dim, num_prototypes, bias=False)

    def loss(self, z_crops, batch):
        loss = sum(self.prototypes(z.detach()).logsumexp(1).mean() for z in z_crops) / len(z_crops)
        return loss, {"loss": loss.item()}


def test_a_misbehaving_objective_fails_the_checks_it_should(tmp_path, monkeypatch):
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg.registry()))  # registered for this test only (the shipped first)
    reg.register("detached", DetachedConfig)(Detached)
    report = check_method("detached", processes=1, workdir=tmp_path)
    status = {r.check: r.status for r in report.results}
    assert not report.passed
    assert {c for c, s in status.items() if s == "FAIL"} == {"gradients", "diagnostics"}, report.table()
    assert status["processes"] == "skip" and status["resume"] == "pass"
    detail = {r.check: r.detail for r in report.results}
    assert "no gradient reaches the backbone" in detail["gradients"]
    assert "assign_entropy" in detail["diagnostics"]
    assert "2 of 8 checks FAIL" in report.table()


def test_the_command_prints_the_table_and_exits_1_when_a_check_fails(monkeypatch, capsys):
    failing = Report("x", [Result("config", "pass", 0.1, "ok"), Result("resume", "FAIL", 2.0, "tensors differ")])
    monkeypatch.setattr(conformance, "check_method", lambda name, processes, workdir: failing)
    assert conformance.main(["x", "processes=1"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "check-method x" and out[-1] == "x: 1 of 2 checks FAIL (1 pass) in 2 s"
    assert out[3].split()[:2] == ["resume", "FAIL"] and out[3].endswith("tensors differ")
    failing.results.pop()
    assert conformance.main(["x"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "x: no check fails (1 pass) in 0 s"


@pytest.mark.filterwarnings("ignore:'ssl_bench.check_method' found in sys.modules")  # runpy runs it as __main__
@pytest.mark.parametrize("argv, needle", [(["nope"], "unknown method 'nope'; valid choices: barlow_twins, byol, carl"),
                                          ([], "a method name is required"),
                                          (["swav", "bogus=1"], "cannot read 'bogus=1'; valid keys: processes")])
def test_bad_input_is_one_line(argv, needle, capsys):
    from ssl_bench.__main__ import main

    assert main(["check-method", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {needle}") and "\n" not in err and "Traceback" not in err


def _fake_run(root, losses, weight, entropy=2.0):
    """A finished run's files as check_processes reads them: metrics.jsonl and the checkpoint's weights."""
    import json

    import torch
    from safetensors.torch import save_file

    (root / "checkpoint").mkdir(parents=True)
    (root / "summary.json").write_text("{}")
    rows = [{"epoch": e, "loss": x, "assign_entropy": entropy, "prototypes_used": 30} for e, x in enumerate(losses)]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    weights = {"w": torch.tensor([weight, -2.0]), "steps": torch.tensor([8])}
    save_file(weights, root / "checkpoint" / "model.safetensors")
    return root


class _Finished:
    """A two-process launch that has exited 0 (check_processes then compares the folders)."""

    returncode = 0

    def communicate(self, timeout=None):
        return "", ""


@pytest.mark.parametrize("loss2, weight2, entropy2, verdict", [
    (4.0, 1.0, 2.0, "pass"),                 # the same run
    (4.0048, 1.0, 2.0, "pass"),              # DeepCluster-v2's worst natural gap (1.2e-3) with room: 1.2e-3 x 4
    (4.12, 1.0, 2.0, "loss by 0.03"),        # SwAV's planted defect: Sinkhorn without its all-reduce (0.03)
    (4.0, 1.0 + 0.96, 2.0, "weights by 0.48"),  # ... its weights (0.48 of the largest |value|, 2.0 here)
    (4.0, 1.0, 2.044, "assign_entropy by 0.044"),
])
def test_the_process_check_separates_round_off_from_a_distributed_defect(tmp_path, loss2, weight2, entropy2, verdict):
    """The tolerances (PROCESS_TOLERANCE, measured by benchmarks/kernel_spread.py --only processes) pass the worst
    one-vs-two gap seen on any kernel path and fail the planted defects' gaps."""
    _fake_run(tmp_path / "one" / "r", [5.0, 4.0], 1.0)
    _fake_run(tmp_path / "two" / "r", [5.0, loss2], weight2, entropy2)
    if verdict == "pass":
        assert conformance.check_processes(_Finished(), tmp_path).startswith("losses and 2 tensors agree")
    else:
        with pytest.raises(conformance.CheckFailed, match=verdict.replace(" ", " .*")):
            conformance.check_processes(_Finished(), tmp_path)
