"""The package's layers (docs/layout.md): the library (wgan_ext's top-level modules: ops, references, drop-ins,
graphs) imports nothing of the application (wgan_ext.train, wgan_ext.eval); the trainer's loop has no per-mode
branch; every module sits in the folder of its layer."""

import ast
import os
import subprocess
import sys

import wgan_ext

PACKAGE = os.path.dirname(wgan_ext.__file__)
APPLICATION = ("train", "eval")
LIBRARY = sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py"))


def imported_modules(path: str, package: str) -> set[str]:
    """Absolute names of every module an import statement in `path` (a module of `package`) may load."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from . import train` imports a module
    return names


def test_the_library_is_what_the_layout_says():
    assert LIBRARY == ["__init__.py", "_ops.py", "_reference.py", "_watch.py", "clip.py", "gradient_penalty.py",
                       "graphs.py", "info.py", "optim.py", "spectral_norm.py"]
    for app in APPLICATION:
        assert os.path.isfile(os.path.join(PACKAGE, app, "__init__.py"))


def test_no_library_module_imports_the_application():
    for name in LIBRARY:
        imports = imported_modules(os.path.join(PACKAGE, name), "wgan_ext")
        bad = sorted(m for m in imports for app in APPLICATION
                     if m == f"wgan_ext.{app}" or m.startswith(f"wgan_ext.{app}."))
        assert not bad, f"wgan_ext/{name} imports the application: {bad}"


def test_importing_the_library_loads_no_application_module():
    code = ("import sys, wgan_ext, wgan_ext.clip, wgan_ext.optim, wgan_ext.gradient_penalty, wgan_ext.spectral_norm, "
            "wgan_ext.graphs, wgan_ext.info; "
            "print(sorted(m for m in sys.modules if m.startswith(('wgan_ext.train', 'wgan_ext.eval'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(PACKAGE))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_import_check_sees_relative_and_absolute_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from .train import trainer\nfrom . import eval\nimport wgan_ext.train.config\n")
    got = imported_modules(str(p), "wgan_ext")
    assert {"wgan_ext.train", "wgan_ext.train.trainer", "wgan_ext.eval", "wgan_ext.train.config"} <= got


def test_the_loop_has_no_per_mode_branch():
    with open(os.path.join(PACKAGE, "train", "trainer.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        # no comparison with a mode option, and no mode name as a string anywhere in the loop
        if isinstance(node, ast.Compare):
            names = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            assert not names & {"lipschitz", "fused_optimizer", "clip_order"}, ast.unparse(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in ("clip", "gp", "sn"), f"trainer.py names the mode {node.value!r}"
