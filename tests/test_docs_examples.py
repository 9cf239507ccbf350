"""Every python and bash example of the README and the documentation site runs as written, in a fresh interpreter
in a scratch folder, or says on the line above it why it cannot run here (a data set, a GPU, network, minutes of
training)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the README and the site's pages; docs/_incoming holds drafts that are not part of the site
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>python|bash)\n(?P<code>.*?)```", re.S)
NOT_RUN = re.compile(r"<!-- not run: (?P<why>[^>]*\S) -->")


def examples():
    """(page, line, language, code, why not run or None) for every python and bash block of every page."""
    found = []
    for page in PAGES:
        text = "\n" + page.read_text()
        for m in FENCE.finditer(text):
            marker = NOT_RUN.fullmatch(m["before"].strip())
            line = text[: m.start("code")].count("\n")
            found.append((page.relative_to(ROOT).as_posix(), line, m["lang"], m["code"], marker and marker["why"]))
    return found


EXAMPLES = examples()
RUN = [e for e in EXAMPLES if e[4] is None]


def run_example(lang, code, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    argv = [sys.executable, "-c", code] if lang == "python" else ["bash", "-e", "-o", "pipefail", "-c", code]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_example_runs_here_or_says_why_not():
    assert {p for p, *_ in EXAMPLES} >= {"README.md", "docs/getting-started.md", "docs/models.md"}
    skipped = [(p, line) for p, line, _, _, why in EXAMPLES if why is not None]
    assert all(why.strip() for *_, why in EXAMPLES if why is not None)
    assert len(RUN) >= 10, f"only {len(RUN)} examples run; {len(skipped)} are marked not run"


@pytest.mark.parametrize("page,line,lang,code", [e[:4] for e in RUN], ids=[f"{e[0]}:{e[1]}" for e in RUN])
def test_example_runs_in_a_fresh_interpreter(page, line, lang, code, tmp_path):
    result = run_example(lang, code, tmp_path)
    assert result.returncode == 0, f"{page}:{line} ({lang}) failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def _section_code(page, title):
    text = (ROOT / page).read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_in_other_frameworks_examples_give_what_their_comments_say(tmp_path):
    blocks = _section_code("docs/models.md", "In other frameworks")
    assert len(blocks) == 2 and all("import inceptionnext" in b for b in blocks)
    checks = """
assert tuple(feats["c3"].shape) == (2, 80, 16, 16) and tuple(feats["c5"].shape) == (2, 320, 4, 4)
assert tuple(low.shape) == (2, 40, 32, 32) and tuple(high.shape) == (2, 320, 8, 8)
assert tuple(decoded.shape) == (2, 64, 32, 32)
"""
    result = run_example("python", blocks[0] + checks, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    checks = """
assert again.num_classes == 10
assert all(torch.equal(v, finetuned.state_dict()[k]) for k, v in again.state_dict().items())
"""
    result = run_example("python", "import torch\n" + blocks[1] + checks, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
