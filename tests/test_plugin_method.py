"""examples/plugin_method, a separate package holding a sixth objective (VICReg), installed into a temporary folder
(never into this environment): through its entry point it is a method like the shipped five (registry, --help,
completion, compare's default list, its config group generated from its dataclass), passes check-method and runs a
smoke comparison against SwAV. A broken plug-in is one line naming its entry point and spares the shipped five."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # integration: several processes


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin_method"
SHIPPED = ["barlow_twins", "byol", "carl", "deepclusterv2", "dino", "selav2", "simclr", "swav"]


def _run(args: list, env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _env(*paths: Path) -> dict[str, str]:
    extra = [str(p) for p in paths] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(extra), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(a working folder, the environment that finds the installed plug-in)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"  # the build writes build/ and *.egg-info beside the sources: build from a copy
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    pip = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                "--no-cache-dir", "--disable-pip-version-check", "--target", site, src], os.environ, tmp)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    assert (site / "ssl_bench_vicreg.py").is_file() and list(site.glob("*.dist-info/entry_points.txt"))
    return tmp, _env(site)


def test_the_plugin_is_a_method_like_the_shipped_ones(plugin):
    tmp, env = plugin
    probe = textwrap.dedent("""
        import doctest, json
        from ssl_bench.analysis import compare
        from ssl_bench.config import compose as config, help as run_help
        from ssl_bench.config.registry import registry
        import ssl_bench_vicreg
        cfg = config.compose(["method=vicreg", "budget=smoke"])
        try:
            config.compose(["method=vicreg", "budget=smoke", "method.mu_param=-1"])
        except config.ConfigError as exc:
            refused = str(exc)
        examples = doctest.testmod(ssl_bench_vicreg)
        print(json.dumps({"registry": list(registry()), "options": config.group_options("method"),
                          "compare": compare.all_methods(), "method": dict(cfg.method), "refused": refused,
                          "help": run_help.app_help(), "source": registry()["vicreg"].source,
                          "examples": [examples.attempted, examples.failed]}))
    """)
    out = _run([sys.executable, "-c", probe], env, tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["registry"] == got["options"] == [*SHIPPED, "vicreg"]
    assert got["compare"] == ["swav", "simclr", "deepclusterv2", "selav2", "carl", "dino", "byol", "barlow_twins",
                             "vicreg"]
    # The config group comes from the dataclass: its fields and defaults, no YAML file anywhere.
    assert got["method"] == {"name": "vicreg", "lambda_param": 25.0, "mu_param": 25.0, "nu_param": 1.0, "eps": 1e-4}
    assert got["refused"] == "method.mu_param must be >= 0, got -1.0"
    assert "barlow_twins, byol, carl, deepclusterv2, dino, selav2, simclr, swav, vicreg (default swav)" in got["help"]
    assert got["source"] == "entry point 'vicreg = ssl_bench_vicreg:VICReg'"
    assert got["examples"][0] > 5 and got["examples"][1] == 0  # the plain-loop example runs
    completion = _run([sys.executable, "-m", "ssl_bench.run", "-sc", "query=bash"],
                      {**env, "COMP_LINE": "ssl-bench run method="}, tmp)
    assert completion.returncode == 0 and "method=vicreg" in completion.stdout.split(), completion.stderr[-1000:]


def test_the_plugin_passes_check_method(plugin):
    tmp, env = plugin
    out = _run([sys.executable, "-m", "ssl_bench", "check-method", "vicreg", f"workdir={tmp / 'check'}"], env, tmp)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[2:-1]}
    assert rows == {"config": "pass", "crops": "pass", "gradients": "pass", "resume": "pass", "seed": "pass",
                    "diagnostics": "skip", "teacher": "skip", "processes": "pass"}
    assert out.stdout.strip().splitlines()[-1].startswith("vicreg: no check fails")


def test_a_smoke_comparison_against_swav(plugin):
    tmp, env = plugin
    results = tmp / "results"
    out = _run([sys.executable, "-m", "ssl_bench.compare", "methods=[swav,vicreg]", "dataset=fashion_mnist",
                "budget=smoke", "seeds=[0]", f"results={results}", "eval.random_baseline=false"], env, tmp)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    table = next(results.glob("compare/*/table.md")).read_text()
    assert "| SwAV |" in table and "| VICReg |" in table
    assert sorted(p.parent.name.split("-")[0] for p in results.glob("runs/*/summary.json")) == ["swav", "vicreg"]


def _fake_distribution(site: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ssl_bench.methods]\n{entry_points}\n")
    for module, text in modules.items():
        (site / f"{module}.py").write_text(text)


def test_a_broken_plugin_is_one_line_naming_its_entry_point(tmp_path):
    site = tmp_path / "site"
    _fake_distribution(site, "broken_import", "broken = no_such_module_here:Thing", {})
    _fake_distribution(site, "unregistered", "plain = plain_plugin:Plain", {"plain_plugin": "class Plain:\n    pass\n"})
    _fake_distribution(site, "bad_config", "badcfg = badcfg_plugin:Bad", {"badcfg_plugin": textwrap.dedent("""
        from ssl_bench.methods.base import Method, register

        @register("badcfg", dict)
        class Bad(Method):
            pass
    """)})
    _fake_distribution(site, "clash", "swav = clash_plugin:X", {"clash_plugin": "X = 1\n"})
    env = _env(site)
    out = _run([sys.executable, "-c", "from ssl_bench.config.registry import registry; print(' '.join(registry()))"],
               env, tmp_path)
    assert out.returncode == 0 and out.stdout.split() == SHIPPED, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and len(lines) == 4, out.stderr
    by_name = {line.split("'")[1]: line for line in lines}
    assert by_name["broken"].startswith("warning: objective plug-in 'broken' (entry point 'broken = "
                                        "no_such_module_here:Thing' of group ssl_bench.methods) skipped: "
                                        "ModuleNotFoundError: No module named 'no_such_module_here'")
    assert "must name a class decorated with @register('plain'" in by_name["plain"]
    assert "cannot register the objective 'badcfg'" in by_name["badcfg"] and "is not a dataclass" in by_name["badcfg"]
    assert "'swav' is a shipped objective" in by_name["swav"]
    # Asking for it: the run refuses in one line naming the valid choices (after the warning).
    run = _run([sys.executable, "-m", "ssl_bench.run", "method=broken", "budget=smoke"], env, tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last == "error: unknown method 'broken'; valid choices: " + ", ".join(SHIPPED)
