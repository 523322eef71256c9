"""The command-line programs: every console script in setup.py names a callable that answers --help, and
every tools/*.py file is a thin entry point into one of them that runs as a script with no sys.path edits."""
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted((ROOT / "tools").glob("*.py"))


def console_scripts() -> dict[str, str]:
    """name -> "module:function", read from setup.py's source (the installed metadata may be older)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            specs = ast.literal_eval(node.value)["console_scripts"]
            return dict(spec.split("=", 1) for spec in specs)
    raise AssertionError("setup.py has no entry_points")


def test_the_issue_s_console_scripts_are_registered():
    wanted = {"megajepa-train", "megajepa-convert-to-hf", "megajepa-convert-from-hf", "megajepa-preprocess",
              "megajepa-evaluate", "megajepa-generate-data", "megajepa-train-tokenizer", "megajepa-analyze",
              "megajepa-report"}
    assert set(console_scripts()) == wanted


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_console_script_answers_help(name, capsys):
    module, function = console_scripts()[name].split(":")
    entry = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as e:
        entry(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.name)
def test_tool_file_is_a_thin_entry_point_into_a_console_script(tool):
    source = tool.read_text()
    assert "sys.path" not in source
    targets = set(console_scripts().values())
    imported = [f"{n.module}:{a.name}" for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)
                for a in n.names]
    assert len(imported) == 1 and imported[0] in targets, imported
    assert len(source.splitlines()) <= 5


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.name)
def test_tool_runs_as_a_script_from_elsewhere(tool, tmp_path):
    """From another directory, as a launcher runs it: sys.path[0] is tools/, the package comes from the install
    (or PYTHONPATH, which the other script-running tests set the same way)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, str(tool), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage:" in p.stdout
