"""What the README and the documentation site promise beside their examples (tests/test_docs_examples.py): CI
runs the test command the README gives and builds the site, and nothing a user reads carries development notes."""

import ast
import re
from pathlib import Path

from inceptionnext.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "inceptionnext"
# the README and the site's pages; docs/_incoming holds drafts that are not part of the site
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md"))


def test_ci_runs_the_test_command_the_readme_gives():
    readme_commands = _two_commands()
    assert "python -m pytest -q" in readme_commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert "python -m pytest -q" in ci  # the whole suite, as the README gives it (the floor step follows it)
    assert any(line.startswith("mkdocs build --strict") or " mkdocs build --strict" in line for line in ci)


def _two_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands\n", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()]


# Development notes: issue numbers, the wording, temporary paths, remarks on who built what and where.
DEV_NOTES = re.compile(
    r"\bissues?\s*#?\d+|\bthe issue'?s?\b|#\d{2,}\b|/tmp/|\bsessions? (?:that|which) built\b|\bthe builders\b"
    r"|\bproject's anchors\b|\breference measurements\b|farm-studio",
    re.I,
)


def _docstrings():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}", doc


def _help_texts(capsys):
    texts = []
    for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
        try:
            main(argv)
        except SystemExit:
            pass
        out = capsys.readouterr()
        texts.append((f"inceptionnext {' '.join(argv)}", out.out + out.err))
    return texts


def test_nothing_a_user_reads_carries_development_notes(capsys):
    shipped = [(p.relative_to(ROOT).as_posix(), p.read_text()) for p in PAGES]
    shipped += [(name, (ROOT / name).read_text()) for name in ("CHANGELOG.md", "CONTRIBUTING.md", "CITATION.cff")]
    shipped += list(_docstrings())
    helps = _help_texts(capsys)
    assert len(helps) == len(COMMANDS) + 1 and all("usage" in text.lower() for _, text in helps[1:])
    shipped += helps
    found = [(where, m.group(0)) for where, text in shipped for m in DEV_NOTES.finditer(text)]
    assert not found, f"development notes in shipped text: {found}"


def test_the_scan_catches_what_it_looks_for():
    for note in ("measured (issue 19)", "the issue's targets", "--results-file /tmp/x/final.json", "see #123"):
        assert DEV_NOTES.search(note), note
    for fine in ("issues a warning", "an image folder", "anchor_sizes", "top-1 within 0.5 points"):
        assert not DEV_NOTES.search(fine), fine
