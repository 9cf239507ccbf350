"""The API reference renders what each public function and class takes and gives: every public callable documents
its parameters under ``Args:`` and, when it returns a value, ``Returns:`` (``Yields:`` for a generator), parsed
with griffe's Google-style parser (the one mkdocstrings renders the site with).

    PYTHONPATH=. python tests/test_docstrings.py   # lists what lacks a section
"""

import ast
import dataclasses
import importlib
import inspect
import logging
import re
import textwrap
from pathlib import Path

import griffe
import pytest
from test_architecture import public_modules, public_names

from inceptionnext.models.detection import DETECTION_MODELS

# Methods the class docstring covers: a module's forward is the model's call.
SKIPPED_METHODS = {"forward"}


def _own(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("inceptionnext")


def public_callables():
    """{dotted name: object} of every public function, class and public method a class defines itself.

    Public as the architecture test reads it: what an ``__all__`` lists (a module without one: its own names
    without an underscore), in every module an ``__all__`` reaches from the package."""
    found = {}
    for name, module in sorted(public_modules().items()):
        has_all = hasattr(module, "__all__")
        for attr in sorted(public_names(module)):
            value = getattr(module, attr, None)
            if not (inspect.isclass(value) or inspect.isfunction(value)) or not _own(value):
                continue
            if not has_all and value.__module__ != name:
                continue  # imported into a module without an __all__: public where it is defined
            found.setdefault(f"{value.__module__}.{value.__qualname__}", value)
    for qualname, cls in list(found.items()):
        if not inspect.isclass(cls):
            continue
        for attr, member in vars(cls).items():
            if attr.startswith("_") or attr in SKIPPED_METHODS:
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if inspect.isfunction(member) and not _inherited_doc(cls, attr):
                found[f"{qualname}.{attr}"] = member
    return found


def _inherited_doc(cls, attr) -> bool:
    """Whether `attr` overrides a method of one of the package's base classes, whose docstring documents it."""
    return any(attr in vars(base) and _own(base) for base in cls.__mro__[1:])


def _sections(doc: str):
    parsed = griffe.Docstring(doc, lineno=1, parser="google", parser_options={"warn_missing_types": False})
    logger = logging.getLogger("griffe")
    level, logger.level = logger.level, logging.ERROR
    try:
        return parsed.parse()
    finally:
        logger.level = level


def _parameters(obj):
    """The parameter names a caller passes: a method's self or cls, private `_name` parameters and a class's
    inherited constructor excepted."""
    if inspect.isclass(obj) and not (_own(obj.__init__) or dataclasses.is_dataclass(obj)):
        return []  # an exception or module whose constructor is its base class's
    params = list(inspect.signature(obj).parameters.values())
    if inspect.isfunction(obj) and _is_method(obj):
        params = params[1:]
    return [p.name for p in params if not p.name.startswith("_")]


def _is_method(function) -> bool:
    """Whether `function` is defined in a class and takes the instance or class first (not a staticmethod)."""
    owner = importlib.import_module(function.__module__)
    *path, name = function.__qualname__.split(".")
    for part in path:
        owner = getattr(owner, part, None)
    return inspect.isclass(owner) and not isinstance(inspect.getattr_static(owner, name, None), staticmethod)


def _dataclass_documented(cls) -> set:
    """A config dataclass's fields that carry their help text (``key(default, help)``): the field documents
    itself and the reference lists it."""
    if not dataclasses.is_dataclass(cls):
        return set()
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("help")}


def _function_node(function):
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(function)))
    except (OSError, TypeError):
        return None
    node = ast.parse(source).body[0]
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _own_nodes(node):
    """The nodes of a function's body, nested functions and classes left out."""
    todo = list(node.body)
    while todo:
        child = todo.pop()
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(child))


def _gives(function):
    """'yields', 'returns' or None: what a caller gets back, from the code (a generator) or else the annotation
    (or, without one, a `return` with a value)."""
    node = _function_node(function)
    if node is not None and any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(node)):
        # a context manager that yields nothing gives the caller nothing to document
        return (
            "yields"
            if any(
                isinstance(n, ast.YieldFrom) or n.value is not None
                for n in _own_nodes(node)
                if isinstance(n, (ast.Yield, ast.YieldFrom))
            )
            else None
        )
    annotation = inspect.signature(function).return_annotation
    if annotation is not inspect.Signature.empty:
        return None if annotation in (None, "None", type(None)) or _is_noreturn(annotation) else "returns"
    if node is None:
        return None
    returns = [n for n in _own_nodes(node) if isinstance(n, ast.Return) and n.value is not None]
    return (
        "returns" if any(not (isinstance(n.value, ast.Constant) and n.value.value is None) for n in returns) else None
    )


def _is_noreturn(annotation) -> bool:
    return getattr(annotation, "_name", None) == "NoReturn" or annotation in ("NoReturn", "typing.NoReturn")


def problems(name, obj) -> list:
    """What the docstring of `obj` lacks: undocumented parameters, names under Args that are no parameter, and a
    missing Returns/Yields section."""
    doc = obj.__doc__
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and (doc or "").startswith(f"{obj.__name__}("):
        doc = None  # the signature dataclasses put where a docstring is missing
    if not doc:
        return [f"{name}: no docstring"]
    sections = _sections(inspect.cleandoc(doc))
    kinds = {s.kind for s in sections}
    documented = {
        p.name.lstrip("*")
        for s in sections
        if s.kind in (griffe.DocstringSectionKind.parameters, griffe.DocstringSectionKind.other_parameters)
        or (inspect.isclass(obj) and s.kind is griffe.DocstringSectionKind.attributes)
        for p in s.value
    }
    params = _parameters(obj)
    found = []
    missing = [p for p in params if p not in documented and p not in _dataclass_documented(obj)]
    if missing:
        found.append(f"{name}: Args lacks {', '.join(missing)}")
    # a dataclass may also describe fields that are not constructor arguments
    unknown = [] if dataclasses.is_dataclass(obj) else sorted(documented - set(params))
    if unknown:
        found.append(f"{name}: Args names no parameter: {', '.join(unknown)}")
    if not inspect.isclass(obj):
        gives = _gives(obj)
        if gives == "returns" and griffe.DocstringSectionKind.returns not in kinds:
            found.append(f"{name}: no Returns")
        if gives == "yields" and not kinds & {griffe.DocstringSectionKind.yields, griffe.DocstringSectionKind.returns}:
            found.append(f"{name}: no Yields")
    return found


def all_problems():
    return [p for name, obj in public_callables().items() for p in problems(name, obj)]


def test_the_walk_reaches_the_public_face():
    names = public_callables()
    for expected in (
        "inceptionnext.weights.load_state_dict_file",
        "inceptionnext.models.metanext.MetaNeXt",
        "inceptionnext.train.engine.fit",
        "inceptionnext.deploy.runtimes.load_runtime",
        "inceptionnext.train.sampler.RoundSampler.set_epoch",
    ):
        assert expected in names, expected
    assert not any(n.rsplit(".", 1)[-1].startswith("_") for n in names)


def test_every_public_callable_documents_its_parameters_and_what_it_returns():
    assert all_problems() == []


def test_the_api_reference_lists_every_public_function_and_class():
    """Each public function and class is a member of a block of docs/api.md (the detectors' generated builders
    are named there in a sentence)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    listed = set(re.findall(r"^\s+- (\w+)$", page, re.M))
    top_level = {obj.__name__ for obj in public_callables().values() if "." not in obj.__qualname__}
    assert sorted(top_level - listed - set(DETECTION_MODELS)) == []


def _doc_without(doc: str, parameter: str) -> str:
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{parameter}:"))
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    return "\n".join(lines[:start] + lines[end:])


@pytest.mark.parametrize(
    "target, parameter",
    [
        ("inceptionnext.weights.load_state_dict_file", "path"),
        ("inceptionnext.models.metanext.MetaNeXt", "depths"),
    ],
)
def test_the_check_fails_when_a_parameter_is_undocumented(monkeypatch, target, parameter):
    obj = public_callables()[target]
    assert problems(target, obj) == []
    monkeypatch.setattr(obj, "__doc__", _doc_without(obj.__doc__, parameter))
    assert problems(target, obj) == [f"{target}: Args lacks {parameter}"]


def test_the_check_fails_when_returns_is_missing(monkeypatch):
    target = "inceptionnext.weights.sha256_file"
    obj = public_callables()[target]
    assert problems(target, obj) == []
    doc = obj.__doc__.split("Returns:")[0]
    monkeypatch.setattr(obj, "__doc__", doc)
    assert f"{target}: no Returns" in problems(target, obj)


if __name__ == "__main__":
    found = all_problems()
    print("\n".join(found))
    print(f"{len({p.split(':')[0] for p in found})} callables lack a section ({len(public_callables())} checked)")
