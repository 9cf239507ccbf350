"""A library call leaves the caller's process as it found it: fit() restores the torch settings it changes, when
it returns and when it raises."""

import pytest
import torch
from test_train import make_folder, toy_cfg

from inceptionnext.train import TrainError, fit


def _flags():
    b = torch.backends
    if not hasattr(b, "fp32_precision"):
        return [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")]
    holders = (b, b.cuda.matmul, b.cudnn, b.cudnn.conv, b.cudnn.rnn, b.mkldnn, b.mkldnn.matmul, b.mkldnn.conv)
    return [(h, "fp32_precision") for h in holders]


def _settings():
    """Every float32 precision flag this torch has, read through its newest API."""
    return tuple(getattr(h, name) for h, name in _flags())


@pytest.fixture
def odd_settings():
    """Settings a notebook may hold, none of them the ones a run uses (fp32 matmuls at 'highest')."""
    before = _settings()
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = False
    odd = _settings()
    yield odd
    for (holder, name), value in zip(_flags(), before):
        setattr(holder, name, value)


def test_fit_restores_the_settings_it_changes_when_it_returns(tmp_path, odd_settings):
    data = make_folder(tmp_path / "data", classes=2, train=4, val=2)
    result = fit(toy_cfg(tmp_path, data, model="_test_plain_net", epochs=1, batch_size=4, plot=False, amp="none"))
    assert result.epochs_done == 1 and _settings() == odd_settings


def test_fit_restores_the_settings_it_changes_when_it_raises(tmp_path, odd_settings):
    data = make_folder(tmp_path / "data", classes=2, train=4, val=2)
    with pytest.raises(TrainError, match="unknown model"):
        fit(toy_cfg(tmp_path, data, model="no_such_model_here", epochs=1, amp="none"))
    assert _settings() == odd_settings
