"""The layout's rules, read from the source: imports point one way, no CLI is imported, no sys.path tricks.

    tools/, bench/  ->  videotrain / videoeval / videodata / videoserve  ->  pipelines/
                    ->  generator/, tokenizer/  ->  core/

Each package may import only the first-party packages listed for it below (lazy imports inside
functions count too), so a later change cannot quietly make a model import training code or a
library import a command-line program.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = {"core", "tokenizer", "generator", "pipelines", "videodata", "videoeval", "videotrain", "videoserve"}
FIRST_PARTY = LIBRARIES | {"tools", "bench"}
BELOW_DATA = {"core", "tokenizer", "generator", "pipelines"}
ALLOWED = {
    "core": {"core"},
    "tokenizer": {"core", "tokenizer"},
    "generator": {"core", "generator"},
    "pipelines": {"core", "tokenizer", "generator", "pipelines"},
    "videodata": BELOW_DATA | {"videodata"},
    "videoeval": BELOW_DATA | {"videodata", "videoeval"},
    "videotrain": BELOW_DATA | {"videodata", "videoeval", "videotrain"},
    "videoserve": BELOW_DATA | {"videoserve"},
    "tools": LIBRARIES,  # never another CLI
    "bench": LIBRARIES | {"bench"},
}


def modules() -> list[Path]:
    files = [ROOT / "generate.py"]
    for package in ALLOWED:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def first_party_imports(path: Path) -> set[str]:
    """Top-level first-party package names that ``path`` imports anywhere (relative imports: its own)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(path.relative_to(ROOT).parts[0] if node.level else (node.module or "").split(".")[0])
    return names & FIRST_PARTY


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    package = path.relative_to(ROOT).parts[0]
    # The root generate.py is the README's entry point: a two-line shim that runs tools/generate.py.
    allowed = ALLOWED[package] if package in ALLOWED else LIBRARIES | {"tools"}
    wrong = first_party_imports(path) - allowed
    assert not wrong, f"{path.relative_to(ROOT)} ({package}) imports {sorted(wrong)}; allowed: {sorted(allowed)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sys_path_manipulation(path):
    tree = ast.parse(path.read_text(), str(path))
    touched = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not touched, f"{path.relative_to(ROOT)} uses sys.path at lines {touched}"


def test_tools_holds_command_line_programs_only():
    """Every module in tools/ is a CLI: it has main() and runs it under ``if __name__ == "__main__"``."""
    for path in sorted((ROOT / "tools").glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        runs_main = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
        assert has_main and runs_main, f"{path.name} is not a command-line program"


def test_every_package_says_its_job_and_what_it_may_import():
    for package in sorted(LIBRARIES):
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
        assert doc, f"{package}/__init__.py has no docstring"


def test_test_fault_hooks_live_in_tests():
    for path in modules():
        text = path.read_text()
        assert "TOKVID_TEST" not in text and "TOKVID_CACHE_TEST" not in text, path


def test_the_python_one_liners_of_the_scripts_run(repo_root):
    """scripts/quickstart.sh imported tools.sample_data after the module had moved: the script stopped there."""
    import re
    import subprocess
    import sys

    for script in sorted((repo_root / "scripts").glob("*.sh")):
        for code in re.findall(r'python -c "([^"]+)"', script.read_text()):
            proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
            assert proc.returncode == 0, (script.name, code, proc.stderr[-400:])
