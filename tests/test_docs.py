"""The docs stay true to the tree: the README's layout section names every module of the package, and
nothing in the repository points at files outside it."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "megajepa").rglob("*.py")
                     if p.name != "__init__.py")
    missing = [m for m in modules if m.removeprefix("megajepa/") not in layout]
    assert not missing, f"README.md '## Layout' does not list: {missing}"


def test_no_file_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"\.\./shared/(?!datasets/)|shared/ARCHITECTURE\.md|shared/STYLE\.md|(?<![\w/])ARCHITECTURE\.md")
    hits = [f"{path}:{i}" for path in tracked if path.endswith((".py", ".md", ".sh", ".yaml", ".json"))
            and path != "tests/test_docs.py"
            for i, line in enumerate((ROOT / path).read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert not hits, f"references to design notes outside the repository: {hits}"
