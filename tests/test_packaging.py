"""The package as a user installs it: a wheel built from the checkout, installed (no editable finder, no checkout on
the path) into a throwaway environment that reuses this one's dependencies, run from another directory."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "ssl_bench", "methods", "experiments")


def _run(cmd: list, cwd: Path, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _wheel_files(src: Path) -> set[str]:
    """What the wheel must hold: every module of ssl_bench/ and methods/, every file of experiments/."""
    want = {str(p.relative_to(src)) for p in (src / "ssl_bench").rglob("*.py")}
    want |= {f"ssl_bench/{p.relative_to(src)}" for p in (src / "methods").rglob("*.py")}
    want |= {f"ssl_bench/{p.relative_to(src)}" for p in (src / "experiments").rglob("*") if p.is_file()}
    return want


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_anywhere(tmp_path):
    pytest.importorskip("setuptools.build_meta", reason="setuptools (the build backend) is not installed")
    pytest.importorskip("pip", reason="pip is not installed")
    # Build from a copy: the checkout gets no build/ or *.egg-info, and files others add meanwhile don't matter.
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():  # links kept as links: the build itself must follow ssl_bench/methods -> ../methods
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(ROOT / name, src / name)
    assert (src / "ssl_bench" / "methods").is_symlink()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SSL_BENCH_CONFIG_PATH")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = [sys.executable, "-m", "pip"]
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
                  "-w", tmp_path / "dist", src], tmp_path, env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("ssl_bench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    # The objectives under their one name, through the symlink (the wheel holds files, not the link).
    assert {"ssl_bench/methods/swav.py", "ssl_bench/methods/base.py", "ssl_bench/methods/__init__.py"} <= names
    missing = sorted(_wheel_files(src) - names)
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages?): {missing[:5]}"
    assert not any(n.startswith(("methods/", "experiments/")) for n in names), "no top-level methods or configs"
    assert b"registry" in zipfile.ZipFile(wheel).read("ssl_bench/methods/__init__.py")
    assert "ssl-bench = ssl_bench.__main__:main" in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()

    # A throwaway environment: the wheel alone, then (only after installing, so pip never sees this environment's
    # ssl_bench) a .pth naming this environment's site-packages for the dependencies. A .pth in a plain path entry
    # is not processed, so the editable ssl_bench finder there stays off.
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env).returncode == 0
    python = venv / "bin" / "python"
    installed = _run([*pip, "--python", python, "install", "--no-deps", "--no-index", "--no-cache-dir", wheel],
                     tmp_path, env)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path,
                     env).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "ssl_bench_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ssl_bench = venv / "bin" / "ssl-bench"
    out = tmp_path / "runs"
    run = _run([ssl_bench, "run", "budget=smoke", f"output_dir={out}"], elsewhere, env, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert len(list(out.glob("*/summary.json"))) == 1
    assert not any(elsewhere.iterdir())  # nothing written to the working directory

    bad = _run([ssl_bench, "run", "budget=nope", f"output_dir={out}"], elsewhere, env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error: unknown budget 'nope'; valid choices: ")
    assert "smoke" in bad.stderr and "demo" in bad.stderr and "\n" not in bad.stderr.strip()

    none = _run([ssl_bench], elsewhere, env)
    assert none.returncode == 2 and "valid commands: run, evaluate, compare, sweep, plot, launch" in none.stderr

    # The package comes from the environment, the configs from inside it, a user's folder adds options.
    mine = tmp_path / "my_configs"
    (mine / "budget").mkdir(parents=True)
    (mine / "budget" / "tiny.yaml").write_text("# @package _global_\ndefaults:\n  - smoke\ntrain: {epochs: 1}\n")
    check = ("import importlib.util, ssl_bench, ssl_bench.methods, ssl_bench.methods.swav\n"
             "import ssl_bench.config.compose as c\n"
             "from ssl_bench.data.sources import read_class_list\n"
             "from ssl_bench.config.searchpath import EXPERIMENTS_DIR\n"
             "print(ssl_bench.__file__, ssl_bench.methods.__file__, ssl_bench.methods.swav.__file__, EXPERIMENTS_DIR,"
             " sep='\\n')\n"
             "assert importlib.util.find_spec('methods') is None\n"
             "assert len(read_class_list('imagenet100_classes.txt')) == 100\n"
             "assert sorted(ssl_bench.methods.registry()) == c.group_options('method')\n"
             "assert c.compose(['budget=tiny']).train.epochs == 1 and 'tiny' in c.group_options('budget')\n")
    probe = _run([python, "-c", check], elsewhere, {**env, "SSL_BENCH_CONFIG_PATH": str(mine)})
    assert probe.returncode == 0, probe.stdout[-2000:] + probe.stderr[-2000:]
    assert all(Path(p).is_relative_to(site / "ssl_bench") for p in probe.stdout.split())


def test_the_checkout_imports_the_objectives_from_one_path(tmp_path):
    """methods/ is where users edit objectives and ssl_bench/methods is a link to it (no exec, no __path__ rewriting):
    from the repo root (python -m), from elsewhere (the editable install) and in this process, ssl_bench.methods.swav
    is the file ssl_bench/methods/swav.py, which is methods/swav.py, and no top-level `methods` package is loaded."""
    link = ROOT / "ssl_bench" / "methods"
    assert link.is_symlink() and os.readlink(link) == "../methods"
    tracked = subprocess.run(["git", "ls-files", "-s", "ssl_bench/methods"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout:  # a git checkout: the link itself is committed, nothing under it
        assert [line.split()[0] for line in tracked.stdout.splitlines()] == ["120000"], tracked.stdout
    init = (ROOT / "methods" / "__init__.py").read_text()
    assert "exec(" not in init and "__path__" not in init
    probe = ("import json, sys, ssl_bench.methods.swav as s\n"
             "from ssl_bench.config.registry import registry\n"
             "names = list(registry())\n"
             "print(json.dumps([s.__file__, names, sorted(m for m in sys.modules if m.split('.')[0] == 'methods')]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for cwd in (ROOT, tmp_path):
        out = _run([sys.executable, "-c", probe], cwd, env)
        assert out.returncode == 0, out.stderr[-2000:]
        file, names, top_level = __import__("json").loads(out.stdout.strip().splitlines()[-1])
        assert Path(file) == link / "swav.py" and Path(file).resolve() == ROOT / "methods" / "swav.py", (cwd, file)
        assert names == ["barlow_twins", "byol", "carl", "deepclusterv2", "dino", "selav2", "simclr", "swav"]
        assert top_level == []
    import ssl_bench.methods.swav

    assert Path(ssl_bench.methods.swav.__file__) == link / "swav.py"
    assert not [m for m in sys.modules if m.split(".")[0] == "methods"]


def test_user_config_folders_add_options_and_never_replace_shipped_ones(tmp_path, monkeypatch):
    from ssl_bench import sweep
    from ssl_bench.analysis import compare
    from ssl_bench.config import searchpath
    from ssl_bench.config.compose import ConfigError, compose
    from ssl_bench.config.searchpath import group_options

    mine = tmp_path / "mine"
    for group in ("budget", "study", "sweep"):
        (mine / group).mkdir(parents=True)
    (mine / "budget" / "tiny.yaml").write_text("# @package _global_\ndefaults:\n  - smoke\ntrain: {epochs: 1}\n")
    shutil.copy(searchpath.EXPERIMENTS_DIR / "study" / "methods.yaml", mine / "study" / "my_study.yaml")
    shutil.copy(next((searchpath.EXPERIMENTS_DIR / "sweep").glob("*.yaml")), mine / "sweep" / "my_sweep.yaml")
    monkeypatch.setenv("SSL_BENCH_CONFIG_PATH", str(mine))
    assert {"tiny", "smoke"} <= set(group_options("budget"))
    assert compose(["budget=tiny"]).train.epochs == 1
    assert compare.load_study("my_study")["seeds"] == [0, 1, 2] and "my_study" in group_options("study")
    assert "my_sweep" in sweep.sweep_options() and sweep.read_sweep_file("my_sweep")

    shutil.copy(searchpath.EXPERIMENTS_DIR / "budget" / "smoke.yaml", mine / "budget")
    with pytest.raises(ConfigError, match="budget 'smoke' is defined twice"):
        compose(["budget=smoke"])
    monkeypatch.setenv("SSL_BENCH_CONFIG_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="SSL_BENCH_CONFIG_PATH: no folder"):
        compose([])
    # Missing shipped configs say so, never "valid choices: " with nothing after it.
    monkeypatch.delenv("SSL_BENCH_CONFIG_PATH")
    monkeypatch.setattr(searchpath, "EXPERIMENTS_DIR", tmp_path / "empty")
    with pytest.raises(ConfigError, match="the shipped configs are missing"):
        compose(["budget=smoke"])


def test_ssl_bench_command_dispatches_and_lists_commands(capsys):
    from ssl_bench.__main__ import COMMANDS, main

    for argv, needle in (([], "a command is required"), (["nope"], "unknown command 'nope'")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {needle}; valid commands: {', '.join(COMMANDS)}") and "\n" not in err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {c} " in out for c in COMMANDS)
    # Every entry point (a module with its own keys and a __main__ block) is a command.
    entries = {p.stem for p in (ROOT / "ssl_bench").glob("*.py")
               if "COMMAND = Command(" in (text := p.read_text()) and 'if __name__ == "__main__":' in text}
    entries |= {p.parent.name for p in (ROOT / "ssl_bench").glob("*/__main__.py")}
    assert entries - {"evaluation", "data"} <= set(COMMANDS), entries - set(COMMANDS)
    assert main(["run", "budget=nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown budget 'nope'; valid choices: ")


def test_every_module_imports_alone_and_config_never_imports_a_method():
    """A fresh interpreter imports each module of ssl_bench and of the objectives first (no import-order cycle);
    the dependency between config and methods is one-way: method files never load ssl_bench.config.compose, and the
    config
    reaches them only through the torch-free registry, so importing it stays cheap."""
    import textwrap

    modules = sorted({".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "ssl_bench").rglob("*.py")}
                     | {f"ssl_bench.methods.{p.stem}" for p in (ROOT / "methods").glob("*.py")})
    modules = [m.removesuffix(".__init__") for m in modules if not m.endswith("__main__")]
    code = textwrap.dedent("""
        import importlib, json, sys
        cheap = {}
        for name in ("ssl_bench.errors", "ssl_bench.config.registry", "ssl_bench.config.overrides",
                     "ssl_bench.config.compose"):
            importlib.import_module(name)
            cheap[name] = "torch" in sys.modules
        out = {"cheap": cheap, "failed": {}, "config_from_methods": []}
        for name in sys.argv[1:]:
            for m in [m for m in sys.modules if m == "ssl_bench" or m.startswith("ssl_bench.")]:
                del sys.modules[m]  # every import starts from no module of ours loaded (torch etc. stay cached)
            try:
                importlib.import_module(name)
            except Exception as exc:
                out["failed"][name] = f"{type(exc).__name__}: {exc}"
            if name.startswith("ssl_bench.methods") and "ssl_bench.config.compose" in sys.modules:
                out["config_from_methods"].append(name)
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    assert "ssl_bench.config.compose" in modules and "ssl_bench.methods.swav" in modules and len(modules) > 30
    assert out["failed"] == {}
    assert out["config_from_methods"] == []
    assert not any(out["cheap"].values()), out["cheap"]  # config, registry, errors, overrides: no torch
