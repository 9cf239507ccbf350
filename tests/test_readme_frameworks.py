"""The README's "In other frameworks" examples, run as written (in a scratch folder)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(title):
    text = README.read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_in_other_frameworks_examples_run(tmp_path, monkeypatch):
    blocks = _section_code("In other frameworks")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(blocks[0], "README:frameworks", "exec"), scope)
    assert tuple(scope["feats"]["c3"].shape) == (2, 80, 16, 16) and tuple(scope["feats"]["c5"].shape) == (2, 320, 4, 4)
    assert tuple(scope["low"].shape) == (2, 40, 32, 32) and tuple(scope["high"].shape) == (2, 320, 8, 8)
    assert tuple(scope["decoded"].shape) == (2, 64, 32, 32)
    scope = {}
    exec(compile(blocks[1], "README:hub", "exec"), scope)
    assert scope["again"].num_classes == 10
    assert all(torch.equal(v, scope["finetuned"].state_dict()[k]) for k, v in scope["again"].state_dict().items())
