"""The package as a whole: every module imports without the optional extras, commands live in
cli/ (no `main()` or argparse elsewhere), and no import runs in a circle."""
import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = ROOT / "dino_demo"
EXTRAS = ("onnx", "onnxscript", "onnxruntime", "transformers", "triton")
# Modules whose one job is an extra: they import it at the top, and their callers say what to install.
WRAPPERS = {"dino_demo.export.onnx": "onnx", "dino_demo.export.families": "onnxscript",
            "dino_demo.ops.triton_kernels": "triton", "dino_demo.families.load": "transformers",
            "dino_demo.families.inference": "transformers", "dino_demo.families.detector": "transformers"}

# Makes the extras read as not installed: `import x` raises ModuleNotFoundError, and
# `importlib.util.find_spec("x")` (how libraries probe for them) returns None.
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {EXTRAS!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

for name in BLOCKED:
    sys.modules[name] = None
sys.meta_path.insert(0, Blocker())
"""

IMPORT_ALL = BLOCKER + """
import importlib, json, pkgutil
import dino_demo

failed = {}
for info in pkgutil.walk_packages(dino_demo.__path__, "dino_demo."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue
    try:
        importlib.import_module(info.name)
    except Exception as error:
        failed[info.name] = f"{type(error).__name__}: {error}"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
print(json.dumps({"failed": failed, "extras_loaded": loaded}))
"""


def modules() -> list:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_imports_without_the_optional_extras(tmp_path):
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                               "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["extras_loaded"] == []
    assert set(report["failed"]) == set(WRAPPERS), report["failed"]
    for module, extra in WRAPPERS.items():
        assert f"'{extra}'" in report["failed"][module] or f"of {extra} halted" in report["failed"][module]


def test_export_without_onnx_says_what_to_install(tmp_path):
    code = BLOCKER + "from dino_demo.cli import main\nsys.exit(main(['export', '--out', 'x.onnx']))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1
    assert done.stderr.strip() == ('error: export needs onnx and onnxscript, not installed here: pip install ".[export]" '
                                   '(in the project folder; or: pip install onnx onnxscript onnxruntime)')
    assert not (tmp_path / "x.onnx").exists()


def test_the_export_extra_is_declared():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'optional-dependencies.export = { file = ["requirements-export.txt"] }' in pyproject
    export = {line.split(">")[0] for line in (ROOT / "requirements-export.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    test = {line.split(">")[0] for line in (ROOT / "requirements-test.txt").read_text().splitlines()
            if line and not line.startswith("#")}
    assert export == {"onnx", "onnxscript", "onnxruntime", "openvino"} and export <= test


def test_commands_live_in_cli():
    """No `def main(`, argparse or `__main__` block outside dino_demo/cli/ (and the package's own
    `python -m dino_demo` entry)."""
    offenders = []
    for path in modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "cli" or str(relative) == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main":
                offenders.append(f"{relative}: def main")
            if isinstance(node, ast.Attribute) and node.attr in ("ArgumentParser", "parse_args", "add_argument"):
                offenders.append(f"{relative}: argparse.{node.attr}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                if any(name == "argparse" or name.startswith("argparse.") for name in names) and \
                        relative.parts[0] != "sources":  # sources/checkpoint.py allows argparse.Namespace in files
                    offenders.append(f"{relative}: imports argparse")
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__":
                offenders.append(f"{relative}: __main__ block")
        if path.name == "__main__.py":
            offenders.append(f"{relative}: a __main__ module")
    assert offenders == []
    from dino_demo.cli import COMMANDS

    assert all(module.startswith("dino_demo.cli.") for module, _ in COMMANDS.values())
    for name, (module, _) in COMMANDS.items():
        assert (PACKAGE / "cli" / (module.rsplit(".", 1)[-1] + ".py")).is_file(), name


def _imports(path) -> set[str]:
    """The dino_demo modules `path` imports, at the top or inside a function (relative imports resolved)."""
    relative = path.relative_to(ROOT).with_suffix("")
    package = list(relative.parts[:-1]) if relative.name != "__init__" else list(relative.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if not module.startswith("dino_demo"):
                continue
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dino_demo")}
    return found


def test_no_import_runs_in_a_circle_between_sources_cli_and_train():
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in modules()}
    graph = {name: {m for m in _imports(path) if m in names and m != name} for name, path in names.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    assert not reaches("dino_demo.sources.download", "dino_demo.sources.zoo")
    library = [n for n in names if not n.startswith(("dino_demo.cli", "dino_demo.ui")) and n != "dino_demo.__main__"]
    assert [n for n in library if any(m.startswith("dino_demo.cli") for m in graph[n])] == []
    assert [n for n in library if any(m.startswith("dino_demo.ui") for m in graph[n])] == []


@pytest.mark.parametrize("readme", ["examples/README.md"])
def test_readmes_name_modules_that_exist(readme):
    import re

    text = (ROOT / readme).read_text()
    dotted = set(re.findall(r"`(dino_demo(?:\.\w+)+)", text))
    paths = set(re.findall(r"`(dino_demo/[\w/]+\.py)`", text)) | set(re.findall(r"\((dino_demo/[\w/]+\.py)", text))
    assert dotted or paths
    for name in dotted:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest prefix that is a module; the rest are attributes
            base = ROOT.joinpath(*parts[:cut])
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                break
        else:
            pytest.fail(f"{readme} names {name}, which is no module")
        module = __import__(".".join(parts[:cut]), fromlist=["_"])
        obj = module
        for attribute in parts[cut:]:
            assert hasattr(obj, attribute), f"{readme}: {name}"
            obj = getattr(obj, attribute)
    for path in paths:
        assert (ROOT / path).is_file(), f"{readme} names {path}"


def test_the_test_script_says_before_it_installs_system_packages_as_root():
    script = (ROOT / "scripts" / "test.sh").read_text()
    before_apt = script[:script.index("apt-get update")]
    root_branch = before_apt[before_apt.rindex('if [ "$(id -u)" = 0 ]'):]
    assert "echo" in root_branch and "root" in root_branch.split("echo", 1)[1] and "apt-get" in root_branch
    assert "python -m dino_demo build-ops" in script and "dino_demo.ops.build" not in script
