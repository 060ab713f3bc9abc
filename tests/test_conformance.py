"""`ssl-bench check-method`: every shipped objective passes it, and it catches an objective that misbehaves."""

from dataclasses import dataclass

import pytest
from torch import nn

from ssl_bench.analysis import conformance
from ssl_bench.analysis.conformance import Report, Result, check_method
from ssl_bench.config import registry as reg
from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Method

SHIPPED = ["swav", "simclr", "deepclusterv2", "selav2", "carl"]
CHECKS = ["config", "crops", "gradients", "resume", "seed", "diagnostics", "processes"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_objective_passes(name, tmp_path):
    report = check_method(name, workdir=tmp_path)
    assert report.passed, report.table()
    assert [r.check for r in report.results] == CHECKS
    status = {r.check: r.status for r in report.results}
    assert status["processes"] == "pass"  # two processes really ran
    assert status["diagnostics"] == ("skip" if name == "simclr" else "pass")  # SimCLR has no prototypes
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
    assert "2 of 7 checks FAIL" in report.table()


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
@pytest.mark.parametrize("argv, needle", [(["nope"], "unknown method 'nope'; valid choices: carl, deepclusterv2"),
                                          ([], "a method name is required"),
                                          (["swav", "bogus=1"], "cannot read 'bogus=1'; valid keys: processes")])
def test_bad_input_is_one_line(argv, needle, capsys):
    from ssl_bench.__main__ import main

    assert main(["check-method", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {needle}") and "\n" not in err and "Traceback" not in err
