"""Imports flow one way (docs/architecture.md): every `import` in the package, at module level or inside a
function, is read with `ast` and checked against the layering rules."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "megajepa"
# component -> components it must never import
FORBIDDEN = {
    "model": ("data", "objective", "training", "interop", "eval"),
    "data": ("model", "objective", "training", "interop", "eval"),
    "objective": ("training", "interop", "eval"),
}
EVAL_MAY_REACH = "megajepa.training.checkpoint.locate"  # eval finds checkpoints, never the loop or the writer
TOP = "cli"  # the command-line programs sit above everything; nothing in the package imports them


def imported_modules(path: Path) -> list[tuple[int, str]]:
    return ast_imports(path, PACKAGE)


def ast_imports(path: Path, package_dir: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, relative imports resolved."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            # `from megajepa.x import y` may import the submodule megajepa.x.y
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def component(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


FILES = sorted(PACKAGE.rglob("*.py"))


def violations(own: str, imports: list[tuple[int, str]]) -> list[str]:
    bad = []
    for line, name in imports:
        if not name.startswith("megajepa."):
            continue
        target = name.split(".")[1]
        if target in FORBIDDEN.get(own, ()):
            bad.append(f"line {line}: {own} imports {name}")
        if target == TOP and own != TOP:
            bad.append(f"line {line}: {own} imports {name} (nothing imports the command-line programs)")
        if own == "eval" and target == "training" and not name.startswith(EVAL_MAY_REACH):
            bad.append(f"line {line}: eval imports {name} (it reaches training only through {EVAL_MAY_REACH})")
    return bad


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layering(path):
    bad = violations(component(path), imported_modules(path))
    assert not bad, f"{path}:\n" + "\n".join(bad)


def test_the_checker_reports_a_violation(tmp_path):
    inside = tmp_path / "megajepa" / "model" / "x.py"
    inside.parent.mkdir(parents=True)
    inside.write_text("import torch\n\ndef f():\n    from ..training.trainer import Trainer\n")
    found = [n for _, n in ast_imports(inside, tmp_path / "megajepa")]
    assert found == ["torch", "megajepa.training.trainer.Trainer"]
    assert violations("model", [(4, "megajepa.training.trainer.Trainer")])
    assert violations("eval", [(1, "megajepa.training.checkpoint.store.save")])
    assert not violations("eval", [(1, "megajepa.training.checkpoint.locate.find_checkpoint")])
    assert violations("training", [(1, "megajepa.cli.evaluate.main")])
    assert not violations("cli", [(1, "megajepa.training.trainer.train")])
