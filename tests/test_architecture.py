"""The house plan, checked from the code's own imports: layers import downwards only, no module reaches back
into one that imports it (function-level imports and module names handed to importlib count), every task has
the same parts, and importing the library changes nothing of timm's."""

import ast
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "inceptionnext"
# Layers, bottom up: a module may import its own layer and the ones below, never one above.
LAYERS = (
    ("utils", "ops", "version"),
    ("weights", "checksum"),
    ("models",),
    ("model_file", "data"),
    ("train", "deploy"),
    ("tasks",),
    ("cli",),
)
# The package's faces import everything they show; nothing imports them.
FACES = {"inceptionnext", "inceptionnext.__main__", "inceptionnext.quantize", "inceptionnext.runtimes"}
# Imports of our own modules inside functions (optional third-party packages are imported where they are used;
# our own modules never need to be).
ALLOWED_FUNCTION_IMPORTS = set()
TASK_PARTS = {"__init__.py", "data.py", "evaluate.py", "draw.py", "infer.py", "task.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(current: str, is_package: bool, level: int, name: str) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def imports_of(name: str, path: Path, known):
    """(imported module, inside a function?) for every import of the project's own modules in one file,
    including the literal module names given to importlib.import_module and the CLI's command table."""
    tree = ast.parse(path.read_text())
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node.level, node.module) if node.level else node.module
            if not target or not target.split(".")[0] == "inceptionnext":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, id(node) in in_function))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in in_function) for a in node.names if a.name.startswith("inceptionnext")]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.args[0].value.split(":")[0], True))
    if name == "inceptionnext.cli":
        commands = importlib.import_module("inceptionnext.cli").COMMANDS
        found += [(module, True) for module, _ in commands.values()]
    return [(m, f) for m, f in found if m != name and m in known]


def graph():
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(name: str) -> int:
    top = name.split(".")[1] if "." in name else name
    return next(i for i, group in enumerate(LAYERS) if top in group)


def test_no_import_loops():
    edges = {m: {t for t, _ in deps} for m, deps in graph().items()}
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert loops == []


def test_layers_import_downwards_only():
    upward = [
        (m, t)
        for m, deps in graph().items()
        if m not in FACES
        for t, _ in deps
        if t not in FACES and layer_of(t) > layer_of(m)
    ]
    faces_imported = [(m, t) for m, deps in graph().items() if m not in FACES for t, _ in deps if t in FACES]
    assert upward == [] and faces_imported == []


def test_function_level_imports_only_for_optional_packages():
    found = {(m, t) for m, deps in graph().items() for t, inside in deps if inside and m != "inceptionnext.cli"}
    assert found == ALLOWED_FUNCTION_IMPORTS


def test_the_engine_knows_no_task():
    train = [m for m in graph() if m.startswith("inceptionnext.train")]
    assert train and all(not t.startswith("inceptionnext.tasks") for m in train for t, _ in graph()[m])


def test_every_task_has_the_same_parts_and_is_registered():
    from inceptionnext.train.task import TASKS

    folders = sorted(p for p in (PACKAGE / "tasks").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert [p.name for p in folders] == sorted(TASKS) == ["classification", "detection", "segmentation"]
    for folder in folders:
        assert {f.name for f in folder.glob("*.py")} >= TASK_PARTS, folder


def test_importing_the_library_leaves_timm_unchanged():
    """Every function and class of every timm module is the same object after `import inceptionnext`."""
    code = textwrap.dedent("""
        import sys, timm, timm.models, timm.layers, timm.data, timm.models._factory, timm.models._builder
        def snapshot():
            return {(m, k): id(v) for m, mod in list(sys.modules.items()) if m.startswith("timm")
                    for k, v in list(vars(mod).items()) if callable(v)}
        before = snapshot()
        f = timm.models._factory.load_checkpoint
        import inceptionnext
        after = snapshot()
        changed = sorted(k for k in before if k in after and after[k] != before[k])
        assert timm.models._factory.load_checkpoint is f
        assert not changed, changed[:10]
        dense = [m for m in timm.list_models() if m.startswith(("upernet_", "fpn_", "fasterrcnn_", "maskrcnn_",
                                                                "retinanet_", "fcos_"))]
        assert not dense, dense[:5]
        print("unchanged")
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(PACKAGE.parent)),
    )
    assert out.returncode == 0 and "unchanged" in out.stdout, out.stderr[-2000:]


def test_dense_models_have_their_own_registry():
    import timm

    from inceptionnext.models import create_dense_model, list_dense_models
    from inceptionnext.models.dense import get_dense_model

    seg, det = list_dense_models("segmentation"), list_dense_models("detection")
    assert len(seg) == 22 and len(det) == 48 and not set(seg) & set(timm.list_models())
    model = create_dense_model("fpn_inceptionnext_a", num_classes=3, head_channels=16)
    assert model.num_classes == 3 and model.pretrained_cfg["architecture"] == "fpn_inceptionnext_a"
    with pytest.raises(KeyError, match="did you mean upernet_inceptionnext_t"):
        get_dense_model("upernet_inceptionnext_tt")


# ------------------------------------------------------------------------------------------- the public face
def public_modules():
    """{name: module} of every module an ``__all__`` reaches from the package, the package included."""
    import types

    found, todo = {}, ["inceptionnext"]
    while todo:
        name = todo.pop()
        module = importlib.import_module(name)
        found[name] = module
        for attr in getattr(module, "__all__", ()):
            value = getattr(module, attr, None)
            if (
                isinstance(value, types.ModuleType)
                and value.__name__.startswith("inceptionnext")
                and value.__name__ not in found
            ):
                todo.append(value.__name__)
    return found


def public_names(module) -> set:
    """A module's public names: its ``__all__``, or (a module without one) every name without an underscore."""
    names = getattr(module, "__all__", None)
    return set(names) if names is not None else {n for n in vars(module) if not n.startswith("_")}


def test_every_package_says_what_is_public_and_every_public_name_resolves():
    packages = sorted(module_name(p.parent) for p in PACKAGE.rglob("__init__.py"))
    assert [p for p in packages if not hasattr(importlib.import_module(p), "__all__")] == []
    unresolved = [
        f"{name}.{attr}"
        for name, module in public_modules().items()
        for attr in getattr(module, "__all__", ())
        if not hasattr(module, attr)
    ]
    assert unresolved == []


def documented_references():
    """Every `inceptionnext.x.y` path the README and the docs pages tell a user to import, call or run."""
    import re

    pages = [PACKAGE.parent / "README.md", *sorted((PACKAGE.parent / "docs").rglob("*.md"))]
    found = set()
    for page in pages:
        if page.parent.name == "_incoming" or not page.is_file():
            continue
        text = page.read_text()
        for module, names in re.findall(r"from (inceptionnext[\w.]*) import ([\w, ()]+)", text):
            found |= {f"{module}.{n.strip()}" for n in names.replace("(", "").replace(")", "").split(",") if n.strip()}
        found |= set(re.findall(r"^\s*import (inceptionnext[\w.]*)", text, re.M))
        found |= set(re.findall(r"\b(inceptionnext(?:\.\w+)+)\(", text))  # a call
        found |= set(re.findall(r"python -m (inceptionnext[\w.]+)", text))  # a module run as a command
    return found


def resolves(path: str) -> bool:
    """Whether `path` names something that exists (a module, or a name in one); a page naming what does not
    exist is a stale page, which the docs' own checks answer."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
        except AttributeError:
            return False
        return True
    return False


def test_nothing_the_docs_import_is_internal():
    public = public_modules()
    internal = []
    for path in sorted(p for p in documented_references() if resolves(p)):
        parts = path.split(".")
        module = importlib.import_module(parts[0])
        for i, part in enumerate(parts[1:], 1):
            holder = ".".join(parts[:i])
            if holder not in public or part not in public_names(module):
                internal.append(path)
                break
            module = getattr(module, part)
    assert documented_references() and internal == []


@pytest.mark.parametrize("module", ["inceptionnext.data.shapes", "inceptionnext.data.shape_sets"])
def test_public_command_modules_run_with_python_m_without_a_warning(module):
    # a package that imports its own command module makes `python -m` warn that it was imported before it ran
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "RuntimeWarning" not in out.stderr
