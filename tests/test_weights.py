"""Every real weight source and format, through timm's own create_model, and every loading error."""

import functools
import hashlib
import http.server
import json
import os
import pickle
import subprocess
import sys
import threading
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

from inceptionnext import weights
from inceptionnext.models.zoo import RELEASE_URL
from inceptionnext.weights import CheckpointError

NAME = "inceptionnext_a"


@pytest.fixture(scope="module")
def source():
    """A model with non-trivial weights (timm's own atto, so the file is what timm's hub copy holds)."""
    torch.manual_seed(1)
    model = timm.create_model("inception_next_atto").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


@pytest.fixture(scope="module")
def official_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "inceptionnext_atto.pth"
    torch.save(source.state_dict(), path)  # the release files are raw state dicts
    return path


def assert_same_weights(model, ref, skip=()):
    ref_sd = ref.state_dict()
    for k, v in model.state_dict().items():
        if not any(k.startswith(s) for s in skip):
            torch.testing.assert_close(v, ref_sd[k], msg=k)


def test_checkpoint_path_official_file(source, official_file):
    model = timm.create_model("inceptionnext_atto", checkpoint_path=str(official_file))
    assert_same_weights(model, source)


@pytest.mark.parametrize("fmt", ["raw", "model", "state_dict", "state_dict_ema", "module_prefix", "safetensors"])
def test_local_file_formats(source, tmp_path, fmt):
    sd = source.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "raw":
        torch.save(sd, path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "module_prefix":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    elif fmt == "state_dict_ema":  # the EMA weights win over the raw ones, as in timm
        noisy = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
        torch.save({"state_dict": noisy, "state_dict_ema": sd, "optimizer": {"lr": 0.1}}, path)
    else:
        torch.save({fmt: sd, "epoch": 10}, path)
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert_same_weights(model, source)


def test_new_head_in_chans_and_features_only(source, official_file):
    overlay = dict(file=str(official_file))
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    assert model.get_classifier().out_features == 10
    assert_same_weights(model, source, skip=("head.fc2",))
    assert not torch.equal(model.head.fc2.weight[:10], source.head.fc2.weight[:10])

    gray = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1)
    torch.testing.assert_close(gray.stem[0].weight, source.stem[0].weight.sum(1, keepdim=True))
    assert_same_weights(gray, source, skip=("stem.0.weight",))

    backbone = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, features_only=True)
    x = torch.randn(1, 3, 64, 64)
    source.eval(), backbone.eval()
    with torch.no_grad():
        _, expected = source.forward_intermediates(x)
        for got, want in zip(backbone(x), expected):
            torch.testing.assert_close(got, want)


def test_url_download_is_cached(source, official_file, tmp_path):
    url = official_file.as_uri()  # file:// goes through the same download code as https://
    cache = tmp_path / "cache"
    model = timm.create_model(
        NAME, pretrained=True, pretrained_cfg_overlay=dict(url=url, hf_hub_id=None), cache_dir=str(cache)
    )
    assert_same_weights(model, source)
    assert (cache / official_file.name).is_file()
    moved = official_file.with_suffix(".bak")
    official_file.rename(moved)  # the source is gone: the second load must come from the cache
    try:
        model = timm.create_model(
            NAME, pretrained=True, pretrained_cfg_overlay=dict(url=url, hf_hub_id=None), cache_dir=str(cache)
        )
        assert_same_weights(model, source)
    finally:
        moved.rename(official_file)


@pytest.fixture
def http_server(tmp_path):
    """A file server on 127.0.0.1 that counts its requests."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_http_download_hash_and_cache(source, official_file, http_server, tmp_path):
    root, base, hits = http_server
    data = official_file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    good = f"inceptionnext_atto-{digest[:10]}.pth"
    (root / good).write_bytes(data)
    cache = tmp_path / "cache"
    overlay = dict(url=f"{base}/{good}", hf_hub_id=None)
    for _ in range(2):
        model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=str(cache))
        assert_same_weights(model, source)
    assert hits == [f"/{good}"]  # downloaded once, then served from the cache

    bad = f"inceptionnext_atto-{'0' * 10}.pth"  # the name promises a hash the bytes do not have
    (root / bad).write_bytes(data)
    with pytest.raises(CheckpointError, match="sha256.*does not match"):
        timm.create_model(
            NAME,
            pretrained=True,
            pretrained_cfg_overlay=dict(url=f"{base}/{bad}", hf_hub_id=None),
            cache_dir=str(cache),
        )
    assert not (cache / bad).exists()  # nothing corrupt was cached

    weights.KNOWN_SHA256[f"{base}/pinned.pth"] = digest
    try:
        (root / "pinned.pth").write_bytes(data[:-100])  # truncated in transit
        with pytest.raises(CheckpointError, match="sha256"):
            weights.download_cached(f"{base}/pinned.pth", cache, progress=False)
    finally:
        del weights.KNOWN_SHA256[f"{base}/pinned.pth"]  # the official pins stay for the tests after this one


def test_a_release_file_with_no_published_sha256_loads_with_a_warning_naming_its_sha256(source, tmp_path):
    """A file dropped into the torch hub cache under a release name has nothing to be checked against: it loads, but
    not without a word; a pinned one that matches loads silently, and one that does not is refused."""
    cache = tmp_path / "checkpoints"
    cache.mkdir()
    other = timm.create_model("inception_next_atto")  # random weights of the right shapes
    torch.save(other.state_dict(), cache / "inceptionnext_atto.pth")
    digest = hashlib.sha256((cache / "inceptionnext_atto.pth").read_bytes()).hexdigest()
    url = RELEASE_URL + "inceptionnext_atto.pth"
    overlay = dict(url=url, hf_hub_id=None)
    with pytest.warns(weights.UnpinnedWeightsWarning, match=f"inceptionnext_atto.pth: no published sha256.*{digest}"):
        model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=str(cache))
    assert_same_weights(model, other)

    weights.KNOWN_SHA256[url] = digest
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", weights.UnpinnedWeightsWarning)
            timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=str(cache))
        weights.KNOWN_SHA256[url] = "0" * 64
        with pytest.raises(CheckpointError, match="inceptionnext_atto.pth: sha256 .* is not the 0000"):
            timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=str(cache))
    finally:
        del weights.KNOWN_SHA256[url]


HUB_SCRIPT = r"""
import sys, timm, torch, inceptionnext
model = timm.create_model(sys.argv[1], pretrained=True, cache_dir=sys.argv[2])
ref = torch.load(sys.argv[3], weights_only=True)
for k, v in model.state_dict().items():
    assert torch.equal(v, ref[k]), k
print("HUB-OK", model.pretrained_cfg["hf_hub_id"])
"""


def test_hub_copy_from_offline_cache(source, official_file, tmp_path):
    """timm's hub copy, from a cache laid out as huggingface_hub lays it out, with HF_HUB_OFFLINE=1."""
    cache = tmp_path / "hf"
    repo = cache / "models--timm--inception_next_atto.sail_in1k"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"architecture": "inception_next_atto"}))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, "inceptionnext_atto", str(cache), str(official_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HUB-OK timm/inception_next_atto.sail_in1k" in out.stdout


def test_hub_miss_falls_back_to_url_and_reports_both(official_file, tmp_path, source, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here: do not wait on it
    overlay = dict(hf_hub_id="timm/does-not-exist", url=official_file.as_uri())
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=str(tmp_path))
    assert_same_weights(model, source)
    overlay = dict(hf_hub_id="timm/does-not-exist", url=(tmp_path / "nowhere.pth").as_uri())
    with pytest.raises(CheckpointError, match="(?s)timm/does-not-exist.*nowhere.pth"):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=str(tmp_path))


# --- errors ---


def test_checkpoint_of_another_model(tmp_path):
    path = tmp_path / "convnext.pth"
    torch.save(timm.create_model("convnext_tiny_k3_par1_8").state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"convnext.pth: does not fit inceptionnext_a; \d+ missing keys: .*stages"
    ):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    with pytest.raises(CheckpointError, match=r"does not fit inceptionnext_a.*unexpected keys: downsample_layers"):
        timm.create_model(NAME, checkpoint_path=str(path))


def test_checkpoint_of_another_size_names_shapes(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(timm.create_model("inceptionnext_t").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*checkpoint \(96.*vs model \(40"):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=10)


def test_partial_checkpoint_is_refused_even_with_new_head(tmp_path, source):
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith("stages.3")}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"partial.pth: does not fit inceptionnext_a; \d+ missing keys: stages.3"):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=10)


def test_truncated_and_non_checkpoint_files(official_file, tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(official_file.read_bytes()[: official_file.stat().st_size // 2])
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1}')
    for path in (truncated, text, bad_st):
        with pytest.raises(CheckpointError, match=f"{path.name}: cannot be read as a checkpoint"):
            timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"stem.0.weight": Payload()}, f, protocol=2)  # torch.save's protocol
    with pytest.raises(CheckpointError, match="evil.pth: cannot be read"):
        weights.load_state_dict_file(path)
    assert "this must never run" not in capsys.readouterr().out
    non_tensor = tmp_path / "dict.pth"
    torch.save({"stem.0.weight": [1, 2, 3]}, non_tensor)
    with pytest.raises(CheckpointError, match=r"dict.pth: entry 'stem.0.weight' is a list"):
        weights.load_state_dict_file(non_tensor)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope" / "inceptionnext_atto.pth"
    with pytest.raises(FileNotFoundError, match="weight file not found: .*nope/inceptionnext_atto.pth"):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)))


def test_no_weights_known(tmp_path):
    with pytest.raises(CheckpointError, match="no pretrained weights"):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(url=None, hf_hub_id=None))


def test_save_and_convert_roundtrip(source, tmp_path):
    ckpt = tmp_path / "train.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 1}, ckpt)
    out = weights.convert_checkpoint(ckpt, tmp_path / "atto.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atto.safetensors", "train.pth"]  # no temp files left
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
    assert_same_weights(model, source)


def test_timm_train_checkpoint_with_argparse_args_loads(tmp_path):
    """timm's train.py saves its argparse.Namespace under 'args'; weights-only loading must still read it."""
    import argparse

    model = timm.create_model(NAME)
    sd = model.state_dict()
    path = tmp_path / "model_best.pth.tar"
    torch.save(
        {
            "epoch": 3,
            "arch": NAME,
            "state_dict": sd,
            "version": 2,
            "metric": 75.0,
            "args": argparse.Namespace(lr=0.1, model=NAME, epochs=300),
            "state_dict_ema": None,
        },
        path,
    )
    loaded = weights.load_state_dict_file(path)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_write_atomically_keeps_the_old_file_on_failure_and_gives_an_ordinary_mode(tmp_path):
    from inceptionnext.utils.files import write_atomically

    target = tmp_path / "w.pth"
    torch.save({"a": torch.ones(1)}, target)

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, crash)
    assert torch.equal(torch.load(target)["a"], torch.ones(1)) and os.listdir(tmp_path) == ["w.pth"]
    old = os.umask(0o022)
    try:
        write_atomically(target, lambda tmp: torch.save({"a": torch.zeros(1)}, tmp))
    finally:
        os.umask(old)
    assert (target.stat().st_mode & 0o777) == 0o644  # not mkstemp's owner-only 0600
