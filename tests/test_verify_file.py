"""`inceptionnext.verify_file`, the Python side of `inceptionnext verify`: verified, unchecked and damaged files."""

import pytest
import timm
import torch

import inceptionnext
from inceptionnext import CheckpointError, verify_file
from inceptionnext.cli import verify as verify_cli
from inceptionnext.model_file import save_model


@pytest.fixture(scope="module")
def model():
    return timm.create_model("inceptionnext_a", num_classes=3)


def test_a_sealed_file_verifies_and_a_plain_state_dict_is_unchecked(model, tmp_path):
    save_model(model, tmp_path / "a.safetensors")
    assert verify_file(tmp_path / "a.safetensors") == (True, "converted model file")
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    checked, what = verify_file(str(tmp_path / "plain.pth"))
    assert not checked and what == f"{len(model.state_dict())} entries"


def test_a_flipped_bit_is_refused_by_name(model, tmp_path):
    path = tmp_path / "a.safetensors"
    save_model(model, path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 1  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="a.safetensors: its content does not match the checksum"):
        verify_file(path)


def test_the_command_reports_what_verify_file_returns(model, tmp_path, capsys):
    save_model(model, tmp_path / "a.safetensors")
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    assert verify_cli.cli([str(tmp_path / "a.safetensors")]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {tmp_path / 'a.safetensors'}: converted model file; checksum")
    assert verify_cli.cli([str(tmp_path / "plain.pth")]) == verify_cli.UNCHECKED
    assert verify_cli.cli(["--allow-unchecked", str(tmp_path / "plain.pth")]) == 0
    assert inceptionnext.verify_file is inceptionnext.deploy.verify_file
