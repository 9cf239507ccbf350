"""Mutation testing of the core modules with mutmut, one module at a time against the tests that cover it.

    python scripts/mutation.py                      # every module listed in pyproject.toml
    python scripts/mutation.py inceptionnext/checksum.py inceptionnext/models/layers.py
    python scripts/mutation.py --list               # the modules and their tests
    python scripts/mutation.py --survivors MODULE   # the surviving mutants of a finished run, with their diffs
    python scripts/mutation.py MODULE --tests "tests/test_x.py -k fast" --label quick   # another selection, kept apart
    python scripts/mutation.py MODULE --recheck     # judge the last run's survivors again (after adding tests)

Each module runs in its own copy of the project under .mutation/<module>/ (mutmut reads its settings from the
working folder's pyproject.toml): the copy's [tool.mutmut] is the project's, with `only_mutate` set to the module
and the test selection set to its tests from [tool.inceptionnext.mutation.modules]. mutmut then maps every
mutated function to the tests that call it and runs only those. A second run reuses the results of the first
(mutmut's cache) and re-checks what changed. Needs the `mutation` extra (pip install -e ".[mutation]").
"""

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
# what the tests read besides the package and themselves
COPY = ("inceptionnext", "tests", "configs", "scripts", "docs", "README.md", "pyproject.toml")
KILLED, SURVIVED = {1, 3}, {0}
NO_TESTS = {33}
TIMEOUT = {36, 24, -24, 152, 255}


def settings():
    """mutmut's shared settings, module -> tests, and module -> mutant-name patterns (modules mutated in part)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    ours = data["tool"]["inceptionnext"]["mutation"]
    return data["tool"]["mutmut"], ours["modules"], ours.get("mutants", {})


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def module_pyproject(module: str, tests, shared) -> str:
    """The project's pyproject.toml with [tool.mutmut] narrowed to `module` and its `tests`."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    table = dict(shared, only_mutate=[module], pytest_add_cli_args_test_selection=list(tests))
    body = "[tool.mutmut]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items()) + "\n"
    return re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[)", body, text)


LABEL = ""  # --label: a separate folder (and cache) for a run with another test selection


def workdir(module: str) -> Path:
    return WORK / (module.replace("/", ".").removesuffix(".py") + LABEL)


def existing(tests):
    """The test selection less the files not (yet) in the project; pytest options pass through."""
    return [t for t in tests if t.startswith("-") or not t.startswith("tests/") or (ROOT / t.split("::")[0]).exists()]


def prepare(module: str, tests, shared) -> Path:
    """A fresh copy of the project's sources and tests (mutmut's own results under mutants/ are kept)."""
    tests = existing(tests)
    where = workdir(module)
    where.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src, dst = ROOT / name, where / name
        if dst.is_dir():
            shutil.rmtree(dst)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file():
            shutil.copy2(src, dst)
    (where / "pyproject.toml").write_text(module_pyproject(module, tests, shared), "utf-8")
    # mutmut forks a child per mutant from the process that ran the tests: an OpenMP pool started before the
    # fork hangs the child, so the copy's tests keep torch to one thread
    with open(where / "tests" / "conftest.py", "a", encoding="utf-8") as f:
        f.write("\ntorch.set_num_threads(1)  # scripts/mutation.py: forked mutant runs\n")
    return where


def score(module: str, patterns=()):
    """(killed, survived, timeout, other, survivor names) from mutmut's record of `module`."""
    meta = workdir(module) / "mutants" / (module + ".meta")
    if not meta.is_file():
        return None
    codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    if patterns:
        codes = {k: c for k, c in codes.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    killed = sum(c in KILLED for c in codes.values())
    timeout = sum(c in TIMEOUT for c in codes.values())
    survivors = sorted(k for k, c in codes.items() if c in SURVIVED)
    other = len(codes) - killed - timeout - len(survivors)
    return killed, len(survivors), timeout, other, survivors


def forget_survivors(module: str) -> int:
    """Mark the survivors of the last run (and the mutants no test reached) as not yet judged, so the next run tests
    them again: mutmut re-runs only mutants whose code changed, not those a new test may now kill. Returns how many."""
    meta = workdir(module) / "mutants" / (module + ".meta")
    if not meta.is_file():
        return 0
    data = json.loads(meta.read_text("utf-8"))
    codes = data["exit_code_by_key"]
    survivors = [k for k, c in codes.items() if c in SURVIVED or c in NO_TESTS]
    codes.update(dict.fromkeys(survivors))
    meta.write_text(json.dumps(data, indent=4), "utf-8")
    return len(survivors)


def run(module: str, tests, shared, children: int, patterns=(), recheck: bool = False) -> int:
    where = prepare(module, tests, shared)
    if recheck:
        print(f"== {module}: {forget_survivors(module)} survivors to judge again", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut) if mutmut.exists() else "mutmut", "run", "--max-children", str(children), *patterns]
    print(f"== {module}: {' '.join(tests)}", flush=True)
    return subprocess.call(cmd, cwd=where, env=env)


def report(module: str, patterns=()) -> None:
    s = score(module, patterns)
    if s is None:
        print(f"{module}: no results")
        return
    killed, survived, timeout, other, _ = s
    judged = killed + survived + timeout
    pct = 100 * (killed + timeout) / judged if judged else float("nan")
    print(f"{module}: {pct:.1f}% killed ({killed} killed, {timeout} timed out, {survived} survived, {other} other)")


def survivors(module: str, patterns=()) -> None:
    s = score(module, patterns)
    for name in s[4] if s else []:
        subprocess.call([sys.executable, "-m", "mutmut", "show", name], cwd=workdir(module))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: all in pyproject.toml)")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests")
    parser.add_argument("--survivors", action="store_true", help="show the surviving mutants of the modules")
    parser.add_argument("--report", action="store_true", help="print the scores of finished runs only")
    parser.add_argument("--children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument(
        "--tests", help="test selection instead of the configured one, as pytest arguments in one string"
    )
    parser.add_argument("--recheck", action="store_true", help="judge the last run's survivors again")
    parser.add_argument("--label", default="", help="keep this run's results apart under .mutation/<module>-LABEL")
    args = parser.parse_args(argv)
    global LABEL
    LABEL = f"-{args.label}" if args.label else ""
    shared, modules, parts = settings()
    unknown = [m for m in args.modules if m not in modules]
    if unknown:
        parser.error(f"not configured in [tool.inceptionnext.mutation.modules]: {', '.join(unknown)}")
    chosen = args.modules or list(modules)
    if args.list:
        for m in chosen:
            print(f"{m}: {' '.join(modules[m])}")
        return 0
    if args.survivors:
        for m in chosen:
            survivors(m, parts.get(m, ()))
        return 0
    status = 0
    if not args.report:
        for m in chosen:
            status |= run(
                m,
                shlex.split(args.tests) if args.tests else modules[m],
                shared,
                args.children,
                parts.get(m, ()),
                args.recheck,
            )
    for m in chosen:
        report(m, parts.get(m, ()))
    return status


if __name__ == "__main__":
    sys.exit(main())
