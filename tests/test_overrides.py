"""One override grammar for the entry points' own keys: declared once, --help generated, bad keys one line."""

import importlib

import pytest

from ssl_bench.config.cli import guarded
from ssl_bench.config.overrides import Command, Key
from ssl_bench.errors import ConfigError

COMMANDS = ("evaluate", "compare", "sweep", "plot", "launch", "reference")


@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_every_own_key_with_its_default(name, capsys):
    module = importlib.import_module(f"ssl_bench.{name}")
    assert module.main(["--help"]) == 0
    out = capsys.readouterr().out
    for key in module.COMMAND.keys:
        assert f"\n  {key.name}=" in out and key.help[:30] in out


@pytest.mark.parametrize("name, argv", [("plot", ["nope=1"]), ("reference", ["outdir=x"]),
                                        ("plot", ["sweeps=maybe"]), ("compare", ["seeds=[a]"]),
                                        ("sweep", ["sweep=swav_prototypes_epsilon", "n_trials=lots"]),
                                        ("launch", ["nodes=2"])])
def test_bad_own_key_is_one_line_exit_2(name, argv, capsys, tmp_path):
    module = importlib.import_module(f"ssl_bench.{name}")
    assert guarded(module.main, [*argv, f"results={tmp_path}"] if name in ("compare", "sweep") else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    if "=1" in argv[0] or "outdir" in argv[0]:
        assert "valid keys: " in err


def test_values_use_hydras_grammar():
    cmd = Command("x", "usage", (Key("ids", "list[int]", None, "ids"), Key("on", "bool", False, "on"),
                                 Key("names", "list[str]", None, "names"), Key("path", "str", None, "a path"),
                                 Key("lr", "float", 0.1, "lr")), overrides="run overrides")
    own, rest, given = cmd.parse(["ids=[0, 1,2]", "on=true", "names=swav", "path=/a,b:c", "lr=1e-3", "seed=1"])
    assert own == {"ids": [0, 1, 2], "on": True, "names": ["swav"], "path": "/a,b:c", "lr": 0.001}
    assert rest == ["seed=1"] and given == {"ids", "on", "names", "path", "lr"}
    with pytest.raises(ConfigError, match="expected an integer"):
        cmd.parse(["ids=[0,x]"])
    with pytest.raises(ConfigError, match="cannot read 'ids'"):
        cmd.parse(["ids"])


def test_evaluate_old_seeds_spelling_is_eval_seeds(capsys):
    from ssl_bench.evaluate import parse_args

    own, rest = parse_args(["checkpoint=x", "seeds=[0,1]", "eval=knn"])
    assert own == {"checkpoint": "x", "eval": "knn"} and rest == ["eval.seeds=[0,1]"]
    assert "eval.seeds" in capsys.readouterr().err


@pytest.mark.parametrize("name, argv, needle", [
    ("plot", ["out=/dev/null/figures"], "out=/dev/null/figures: /dev/null is a file, not a folder"),
    ("compare", ["methods=[swav]", "budget=smoke", "results=/dev/null/r"], "results=/dev/null/r: /dev/null is a file"),
    ("compare", ["methods=[swav]", "budget=smoke", "output_dir=/dev/null/runs"], "method swav: output_dir=/dev/null"),
    ("evaluate", ["checkpoint=RUN", "export=/dev/null/backbone.pt"], "export=/dev/null/backbone.pt: /dev/null is a"),
    ("evaluate", ["checkpoint=RUN", "export=."], "export=. is a folder; give a file name"),
])
def test_an_unusable_output_path_is_one_line_exit_2_before_any_work(name, argv, needle, capsys, tmp_path, monkeypatch):
    argv = [a.replace("RUN", str(tmp_path / "no_run")) for a in argv]  # the path is checked before the checkpoint
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"ssl_bench.{name}")
    assert guarded(module.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err
    assert not any(tmp_path.iterdir())


def test_writable_folder_checks_without_creating_anything(tmp_path):
    from ssl_bench.config.overrides import writable_file, writable_folder

    (tmp_path / "a_file").write_text("")
    writable_folder(tmp_path / "new" / "deeper", "output_dir")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match=r"^output_dir=.*a_file/x: .*a_file is a file, not a folder"):
        writable_folder(tmp_path / "a_file" / "x", "output_dir")
    with pytest.raises(ConfigError, match="is a folder; give a file name"):
        writable_file(tmp_path, "export")


def test_output_piped_into_head_ends_quietly():
    """`ssl-bench ... | head -1`: the reader leaves early; no traceback, exit 0 (1 MB cannot fit the pipe)."""
    import subprocess
    import sys

    code = "import sys; from ssl_bench.config.cli import guarded; sys.exit(guarded(lambda a: print('x' * 1_000_000)))"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    p.stdout.read(10)
    p.stdout.close()  # like head: close the pipe before the command has written everything
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("world, finalised", [("2", False), ("1", True)])
def test_one_process_of_several_ends_flushed_without_finalisation(world, finalised):
    """leave(): a process of a multi-process run keeps its exit code and its buffered output but skips Python's
    finalisation (atexit handlers; the gloo teardown there sometimes aborts); a lone process ends as sys.exit does."""
    import os
    import subprocess
    import sys

    code = ("import atexit; from ssl_bench.config.cli import leave; atexit.register(lambda: print('finalised'));"
            "print('result', end=''); leave(3)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    p = subprocess.run([sys.executable, "-c", code], env=dict(env, WORLD_SIZE=world), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    assert p.stdout == ("resultfinalised\n" if finalised else "result")
