"""Loading edge cases and timm's hub format: named one-line errors for missing, empty and foreign files (Python
API and every CLI command that takes weights), and models shared the way timm users
share them (save_for_hf / push_to_hub folders, `local-dir:` and `hf-hub:` names). Unreachable hosts, mirrors,
proxies and offline caches: tests/test_pretrained_sources.py."""

import json

import pytest
import timm
import torch
from timm.models import save_for_hf

from inceptionnext import cli
from inceptionnext.train import checkpoint as train_checkpoint
from inceptionnext.weights import CheckpointError

NAME = "inceptionnext_a"


@pytest.fixture()
def bad_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    return tmp_path


def test_checkpoint_path_is_timms_own_loader_and_our_models_name_a_mismatch(bad_files):
    """`checkpoint_path=` is timm's loader, unchanged by `import inceptionnext`; what does not fit is still a named
    error, raised by our models' own load_state_dict."""
    with pytest.raises(FileNotFoundError):  # timm's own answer to a missing file
        timm.create_model(NAME, checkpoint_path=str(bad_files / "missing.pth"))
    other = bad_files / "other_size.pth"
    torch.save(timm.create_model("inceptionnext_t").state_dict(), other)
    with pytest.raises(CheckpointError, match=f"does not fit {NAME}.*shape mismatches"):
        timm.create_model(NAME, checkpoint_path=str(other))
    good = bad_files / "good.pth"
    source = timm.create_model(NAME)
    torch.save(source.state_dict(), good)
    loaded = timm.create_model(NAME, checkpoint_path=str(good))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", NAME, "--weights", "{f}", "{img}"],
        ["convert", "{f}", "{out}/o.safetensors", "--model", NAME],
        ["convert", "{f}", "{out}/hub", "--model", NAME, "--hub-folder"],
        ["export", NAME, "--weights", "{f}", "--output", "{out}/o.onnx"],
        ["validate", "--model", NAME, "--checkpoint", "{f}", "--dataset", "digits"],
    ],
)
@pytest.mark.parametrize("bad", ["empty.pth", "junk.pth"])
def test_every_cli_command_taking_weights_gives_one_line(argv, bad, bad_files, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(bad_files / "img.png")
    f, img = bad_files / bad, bad_files / "img.png"
    rc = cli.main([a.format(f=f, img=img, out=bad_files) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and bad in err and ("empty (0 bytes)" in err or "cannot be read" in err), err


def test_training_resume_from_an_empty_file_is_named(bad_files):
    with pytest.raises(train_checkpoint.CheckpointError, match=r"empty.pth: it is empty \(0 bytes\)"):
        train_checkpoint.load_checkpoint_file(str(bad_files / "empty.pth"))


# --- timm's hub format ---


@pytest.mark.parametrize("name", [NAME, "convnext_tiny_k3_par1_8"])
def test_save_for_hf_folder_loads_back_through_local_dir(name, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()  # a fine-tuned model with its own class count
    save_for_hf(model, str(tmp_path / "shared"), safe_serialization=True)
    loaded = timm.create_model(f"local-dir:{tmp_path / 'shared'}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert loaded.num_classes == 10 and torch.equal(loaded(x), model(x))
    again = timm.create_model(f"local-dir:{tmp_path / 'shared'}", pretrained=True, num_classes=3)
    assert again.num_classes == 3 and torch.equal(
        again.get_classifier().weight.shape[0] * torch.ones(1), torch.full((1,), 3.0)
    )
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("head")}
    assert all(torch.equal(again.state_dict()[k], v) for k, v in backbone.items())


def test_hf_hub_name_from_the_local_cache(tmp_path, monkeypatch):
    """`hf-hub:` loads what push_to_hub uploaded, here from a Hugging Face cache with HF_HUB_OFFLINE=1."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=7).eval()
    commit = "b" * 40
    repo = tmp_path / "hf" / "models--someone--my-inceptionnext"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_for_hf(model, str(repo / "snapshots" / commit), safe_serialization=True)
    loaded = timm.create_model("hf-hub:someone/my-inceptionnext", pretrained=True, cache_dir=str(tmp_path / "hf"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert loaded.num_classes == 7 and torch.equal(loaded.eval()(x), model(x))


def test_convert_writes_the_hub_folder(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=5).eval()
    torch.save(model.state_dict(), tmp_path / "finetuned.pth")
    assert (
        cli.main(["convert", str(tmp_path / "finetuned.pth"), str(tmp_path / "hub"), "--model", NAME, "--hub-folder"])
        == 0
    )
    assert "local-dir:" in capsys.readouterr().out
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["num_classes"] == 5
    loaded = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
