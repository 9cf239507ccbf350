"""Pretrained weights from every place a user keeps them, through the settings of the user's own network stack,
with timm's own model as the control in each case.

Servers started here on 127.0.0.1 play a Hugging Face mirror (the resolve endpoint with the headers huggingface_hub
reads, LFS files behind a redirect, optionally a token) and an HTTP forward proxy that reaches hosts which do not
exist otherwise (`*.invalid`). Each case runs in a fresh interpreter with its own environment (huggingface_hub
reads several settings when imported) and loads timm's `inception_next_atto` and our `inceptionnext_a`.
"""

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from inceptionnext import weights
from inceptionnext.models.zoo import ZOO

TIMM, OURS = "inception_next_atto", "inceptionnext_a"
REPO = "timm/inception_next_atto.sail_in1k"  # the hub copy both models name
OUR_REPO = "someone/my-inceptionnext"  # a repository pushed with save_for_hf for our architecture
PRIVATE = "someone/private-inceptionnext"
COMMIT = "c" * 40
RELEASE = "/model/inceptionnext_atto.pth"


# ---------------------------------------------------------------------------------------------------------------
# servers


class LocalServer(http.server.ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 at a free port, recording the paths it was asked for."""

    daemon_threads = True

    def __init__(self, handler):
        self.hits = []
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers GET and HEAD alike through `answer(body)`, without logging."""

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)


class Mirror(LocalServer):
    """A Hugging Face mirror: `/{repo}/resolve/{revision}/{file}` answers as the hub does (small files directly,
    weight files with a redirect to `/lfs/{sha256}` and the X-Linked-* headers), and `/model/*` serves release
    files. `damaged` flips bytes in what `/lfs/` sends (the headers still give the true sha256 and size)."""

    def __init__(self, repos, releases, tokens):
        self.repos, self.releases, self.tokens = repos, releases, tokens
        self.damaged = False
        super().__init__(MirrorHandler)


class MirrorHandler(Handler):
    def send(self, status, headers, data, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def answer(self, body):
        server = self.server
        path = urllib.parse.urlsplit(self.path).path
        server.hits.append(path)
        if path.startswith("/model/") and path in server.releases:
            return self.send(200, {"Content-Type": "application/octet-stream"}, server.releases[path], body)
        if path.startswith("/lfs/"):
            data = next((d for files in server.repos.values() for d in files.values() if sha(d) == path[5:]), None)
            if data is None:
                return self.send(404, {}, b"", body)
            if server.damaged:
                middle = len(data) // 2
                data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
            return self.send(200, {"Content-Type": "application/octet-stream"}, data, body)
        repo, sep, rest = path.lstrip("/").partition("/resolve/")
        if not sep or repo not in server.repos:
            return self.send(
                404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"", body
            )
        token = server.tokens.get(repo)
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid username or password."}
            return self.send(401, headers, b"", body)
        _, _, filename = rest.partition("/")
        data = server.repos[repo].get(filename)
        headers = {"X-Repo-Commit": COMMIT}
        if data is None:
            headers.update({"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
            return self.send(404, headers, b"", body)
        if filename.endswith((".safetensors", ".bin", ".pth")):  # stored with LFS: the hub redirects to its store
            # the store is another host (the hub's clients read the metadata off the redirect to it)
            host = self.headers.get("Host", "")
            store = host.replace("127.0.0.1", "localhost") if host.startswith("127.0.0.1") else "lfs.invalid"
            headers.update(
                {
                    "X-Linked-Etag": f'"{sha(data)}"',
                    "ETag": f'"{sha(data)}"',
                    "X-Linked-Size": str(len(data)),
                    "Location": f"http://{store}/lfs/{sha(data)}",
                }
            )
            return self.send(302, headers, b"", body)
        headers.update({"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "Content-Type": "application/json"})
        return self.send(200, headers, data, body)


class Proxy(LocalServer):
    """An HTTP forward proxy: absolute-URI requests to `*.invalid` hosts (which resolve nowhere) go to the mirror."""

    def __init__(self, upstream):
        self.upstream = upstream
        super().__init__(ProxyHandler)


class ProxyHandler(Handler):
    def answer(self, body):
        target = urllib.parse.urlsplit(self.path)
        self.server.hits.append(f"{target.hostname}{target.path}")
        if not target.hostname or not target.hostname.endswith(".invalid"):
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        conn.request(self.command, target.path + (f"?{target.query}" if target.query else ""), headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
        conn.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released) for a host that refuses connections."""
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as s:
        return s.server_address[1]


# ---------------------------------------------------------------------------------------------------------------
# the weights: made up, in the layouts the hub and the release use


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    model = timm.create_model(TIMM)
    state = {k: (v + torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, root / "reference.pth")  # the release layout: a raw state dict
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "model.safetensors"))
    timm_cfg = {"architecture": TIMM, "num_classes": 1000, "pretrained_cfg": {"input_size": [3, 224, 224]}}
    ours_cfg = dict(timm_cfg, architecture=OURS)
    safetensors = (root / "model.safetensors").read_bytes()
    repo = {"config.json": json.dumps(timm_cfg).encode(), "model.safetensors": safetensors}
    our_repo = {"config.json": json.dumps(ours_cfg).encode(), "model.safetensors": safetensors}
    # `local-dir:` folders; timm's own control holds pytorch_model.bin, as timm 1.0.17 to 1.0.23 (at least) read any file
    # of such a folder with torch.load (ours reads either kind)
    for name, cfg, weight_file in (("timm-folder", timm_cfg, "pytorch_model.bin"), ("our-folder", ours_cfg, None)):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(cfg))
        if weight_file:
            shutil.copy(root / "reference.pth", root / name / weight_file)
        else:
            shutil.copy(root / "model.safetensors", root / name / "model.safetensors")
    return dict(
        root=root,
        reference=root / "reference.pth",
        release=(root / "reference.pth").read_bytes(),
        repos={REPO: repo, OUR_REPO: our_repo, PRIVATE: our_repo},
    )


@pytest.fixture
def mirror(files):
    server = Mirror({k: dict(v) for k, v in files["repos"].items()}, {RELEASE: files["release"]}, {PRIVATE: "hf_test"})
    with serving(server):
        yield server


@pytest.fixture
def proxy(mirror):
    with serving(Proxy(mirror.server_address)) as server:
        yield server


# ---------------------------------------------------------------------------------------------------------------
# one case: both models in a fresh interpreter

SCRIPT = r"""
import json, sys
import timm, torch
import inceptionnext
from inceptionnext import weights

spec = json.loads(sys.argv[1])
if spec.get("no_retries"):  # a refused connection fails at once, not after huggingface_hub's 23 s of backoff
    from huggingface_hub.utils import _http

    for backoff in (getattr(_http, "http_backoff", None), getattr(_http, "http_stream_backoff", None)):
        if "max_retries" in (getattr(backoff, "__kwdefaults__", None) or {}):
            backoff.__kwdefaults__["max_retries"] = 0
weights.KNOWN_SHA256.update(spec.get("pins", {}))
reference = torch.load(spec["reference"], weights_only=True)
for name, kwargs in spec["models"]:
    try:
        model = timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:
        print(json.dumps({"model": name, "error": f"{type(e).__name__}: {e}"}))
        continue
    same = all(torch.equal(v, reference[k]) for k, v in model.state_dict().items() if k in reference)
    print(json.dumps({"model": name, "same": same}))
"""


def run_case(tmp_path, models, env=None, pins=None, reference=None, home="home", no_retries=False):
    """Create each (name, kwargs) in a fresh interpreter whose Hugging Face and torch hub caches are under
    tmp_path/home, with no proxy or hub setting from this machine; what each load gave, by model name.
    `no_retries`: huggingface_hub tries a host that refuses connections once instead of backing off 5 times."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    base.update(HF_HOME=str(tmp_path / home / "hf"), TORCH_HOME=str(tmp_path / home / "torch"))
    base.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5")
    base.update(env or {})
    spec = dict(models=models, reference=str(reference), pins=pins or {}, no_retries=no_retries)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(spec)],
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["model"]: r for r in results}


def loaded(result):
    assert result.get("same") is True, result
    return True


def cached_blobs(tmp_path, home="home"):
    return sorted(p.name for p in (tmp_path / home / "hf").rglob("blobs/*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------------
# the settings a restricted network needs


def test_a_hub_mirror_through_hf_endpoint(tmp_path, files, mirror):
    both = run_case(tmp_path, [(TIMM, {}), (OURS, {})], {"HF_ENDPOINT": mirror.url}, reference=files["reference"])
    assert loaded(both[TIMM]) and loaded(both[OURS])
    assert (
        f"/{REPO}/resolve/main/model.safetensors" in mirror.hits
        and f"/lfs/{sha(files['repos'][REPO]['model.safetensors'])}" in mirror.hits
    )
    assert cached_blobs(tmp_path) == [sha(files["repos"][REPO]["model.safetensors"])]  # one copy, shared by both


def test_an_http_proxy_to_the_release_url(tmp_path, files, proxy):
    url = f"http://releases.invalid{RELEASE}"  # a host only the proxy reaches
    overlay = dict(pretrained_cfg_overlay=dict(url=url, hf_hub_id=None))
    both = run_case(
        tmp_path, [(TIMM, overlay), (OURS, overlay)], {"HTTP_PROXY": proxy.url}, reference=files["reference"]
    )
    assert loaded(both[TIMM]) and loaded(both[OURS])
    assert proxy.hits == [f"releases.invalid{RELEASE}"]  # downloaded once, then read from the torch hub cache
    assert (tmp_path / "home" / "torch" / "hub" / "checkpoints" / "inceptionnext_atto.pth").is_file()


def test_a_hub_mirror_behind_a_proxy(tmp_path, files, proxy):
    env = {"HF_ENDPOINT": "http://hub.invalid", "HTTP_PROXY": proxy.url}
    both = run_case(tmp_path, [(TIMM, {}), (OURS, {})], env, reference=files["reference"])
    assert loaded(both[TIMM]) and loaded(both[OURS])
    assert f"hub.invalid/{REPO}/resolve/main/model.safetensors" in proxy.hits


# ---------------------------------------------------------------------------------------------------------------
# every source timm takes


def test_hf_hub_and_local_dir_names(tmp_path, files, mirror):
    names = [
        (f"hf-hub:{REPO}", {}),  # timm's architecture, from its config.json
        (f"hf-hub:{OUR_REPO}", {}),  # ours, as save_for_hf/push_to_hub wrote it
        (f"local-dir:{files['root'] / 'timm-folder'}", {}),
        (f"local-dir:{files['root'] / 'our-folder'}", {}),
    ]
    got = run_case(tmp_path, names, {"HF_ENDPOINT": mirror.url}, reference=files["reference"])
    assert all(loaded(got[name]) for name, _ in names)


@pytest.mark.parametrize("field", ["file", "url", "hf_hub_id"])
def test_pretrained_cfg_overlay(tmp_path, files, mirror, field):
    value = {
        "file": str(files["reference"]),
        "url": f"{mirror.url}{RELEASE}",
        "hf_hub_id": OUR_REPO,
    }[field]
    overlay = dict(pretrained_cfg_overlay={field: value, **({} if field == "hf_hub_id" else {"hf_hub_id": None})})
    both = run_case(
        tmp_path, [(TIMM, overlay), (OURS, overlay)], {"HF_ENDPOINT": mirror.url}, reference=files["reference"]
    )
    assert loaded(both[TIMM]) and loaded(both[OURS])
    if field == "hf_hub_id":
        assert f"/{OUR_REPO}/resolve/main/model.safetensors" in mirror.hits


def test_a_warm_cache_copied_from_another_machine_used_offline(tmp_path, files, mirror):
    """One machine fills its Hugging Face cache through the mirror; the cache is copied to a machine with no
    network at all, which loads from it with HF_HUB_OFFLINE=1 (and nothing listening at its endpoint)."""
    run_case(tmp_path, [(OURS, {})], {"HF_ENDPOINT": mirror.url}, reference=files["reference"], home="online")
    shutil.copytree(tmp_path / "online" / "hf", tmp_path / "offline" / "hf", symlinks=True)
    env = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    both = run_case(tmp_path, [(TIMM, {}), (OURS, {})], env, reference=files["reference"], home="offline")
    assert loaded(both[TIMM]) and loaded(both[OURS])


def test_the_torch_hub_cache(tmp_path, files):
    """The release file already in $TORCH_HOME/hub/checkpoints: used as it is, the host never asked."""
    checkpoints = tmp_path / "home" / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(files["reference"], checkpoints / "inceptionnext_atto.pth")
    overlay = dict(pretrained_cfg_overlay=dict(url=f"http://127.0.0.1:{closed_port()}{RELEASE}", hf_hub_id=None))
    both = run_case(tmp_path, [(TIMM, overlay), (OURS, overlay)], reference=files["reference"])
    assert loaded(both[TIMM]) and loaded(both[OURS])


def test_a_private_repository_needs_the_token(tmp_path, files, mirror):
    overlay = dict(pretrained_cfg_overlay=dict(hf_hub_id=PRIVATE, url=None))
    models = [(TIMM, overlay), (OURS, overlay)]
    without = run_case(tmp_path, models, {"HF_ENDPOINT": mirror.url}, reference=files["reference"])
    assert "error" in without[TIMM]
    assert "CheckpointError" in without[OURS]["error"] and "HF_TOKEN" in without[OURS]["error"]
    assert f"hf-hub:{PRIVATE} (from {mirror.url} (HF_ENDPOINT)" in without[OURS]["error"]
    both = run_case(tmp_path, models, {"HF_ENDPOINT": mirror.url, "HF_TOKEN": "hf_test"}, reference=files["reference"])
    assert loaded(both[TIMM]) and loaded(both[OURS])


# ---------------------------------------------------------------------------------------------------------------
# what is refused, and what the errors say


def test_a_mirror_serving_a_damaged_file_is_refused_and_nothing_is_cached(tmp_path, files, mirror):
    mirror.damaged = True
    overlay = dict(pretrained_cfg_overlay=dict(url=None))
    env = {"HF_ENDPOINT": mirror.url}
    ours = run_case(tmp_path, [(OURS, overlay)], env, reference=files["reference"])[OURS]
    assert "CheckpointError" in ours["error"] and "sha256" in ours["error"] and "damaged" in ours["error"]
    assert "nothing was cached" in ours["error"] and f"hf-hub:{REPO}/model.safetensors" in ours["error"]
    assert cached_blobs(tmp_path) == [] and not list((tmp_path / "home" / "hf").rglob("model.safetensors"))
    # the control: timm's loader takes the damaged copy as it came, and keeps it
    control = run_case(tmp_path, [(TIMM, overlay)], env, reference=files["reference"])[TIMM]
    assert control.get("same") is False or "error" in control
    assert cached_blobs(tmp_path) == [sha(files["repos"][REPO]["model.safetensors"])]


def test_unreachable_sources_name_the_endpoint_proxy_caches_and_ways_out(tmp_path, files):
    dead = f"http://127.0.0.1:{closed_port()}"
    env = {"HF_ENDPOINT": dead, "HTTP_PROXY": f"http://127.0.0.1:{closed_port()}", "NO_PROXY": "127.0.0.1"}
    overlay = dict(pretrained_cfg_overlay=dict(url=f"http://releases.invalid{RELEASE}"))
    both = run_case(tmp_path, [(TIMM, overlay), (OURS, overlay)], env, reference=files["reference"], no_retries=True)
    assert "error" in both[TIMM]
    message = both[OURS]["error"]
    home = tmp_path / "home"
    for part in (
        f"hf-hub:{REPO} (from {dead} (HF_ENDPOINT), NO_PROXY bypasses the proxy for it)",
        f"not in the Hugging Face cache {home / 'hf' / 'hub'}",
        f"http://releases.invalid{RELEASE} (through the proxy {env['HTTP_PROXY']})",
        f"not in the torch hub cache {home / 'torch' / 'hub' / 'checkpoints'}",
        "pretrained_cfg_overlay=dict(file=PATH)",
        "--weights PATH",
        "HF_HUB_OFFLINE=1",
        f"hf download {REPO} --local-dir inception_next_atto.sail_in1k",
    ):
        assert part in message, (part, message)
    assert "huggingface.co" not in message and "github.com" not in message  # only what was really tried


def test_offline_without_a_cache_says_so_at_once(tmp_path, files):
    overlay = dict(pretrained_cfg_overlay=dict(url=None))
    ours = run_case(tmp_path, [(OURS, overlay)], {"HF_HUB_OFFLINE": "1"}, reference=files["reference"])[OURS]
    assert "HF_HUB_OFFLINE is set, so only the cache was looked in" in ours["error"]


# ---------------------------------------------------------------------------------------------------------------
# pinned sha256 of the official files


def test_pins_name_the_official_files():
    """Every pin is a full sha256 of a file the zoo names: a release URL or a hub copy's weight file."""
    known = {f"{entry.release_file}" for entry in ZOO}
    repos = {entry.hf_hub_id for entry in ZOO if entry.hf_hub_id}
    for key, digest in weights.KNOWN_SHA256.items():
        assert len(digest) == 64 and int(digest, 16) >= 0, key
        if key.startswith("hf-hub:"):
            repo, _, filename = key[len("hf-hub:") :].rpartition("/")
            assert repo in repos and filename in weights.HUB_WEIGHT_FILES, key
        else:
            assert key.rsplit("/", 1)[-1] in known, key


def test_a_cached_release_file_that_is_not_the_pinned_one_is_refused_by_name(tmp_path, files):
    """A random-weights file under the release file's name in the torch hub cache is not taken as pretrained."""
    checkpoints = tmp_path / "home" / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    impostor = checkpoints / "inceptionnext_atto.pth"
    torch.save(timm.create_model(TIMM).state_dict(), impostor)
    url = f"http://127.0.0.1:{closed_port()}{RELEASE}"
    overlay = dict(pretrained_cfg_overlay=dict(url=url, hf_hub_id=None))
    pins = {url: sha(files["release"])}
    ours = run_case(tmp_path, [(OURS, overlay)], pins=pins, reference=files["reference"])[OURS]
    assert f"{impostor}: sha256 {sha(impostor.read_bytes())[:16]}... is not the {pins[url][:16]}..." in ours["error"]
    impostor.write_bytes(files["release"])  # the real file under the same name loads
    assert loaded(run_case(tmp_path, [(OURS, overlay)], pins=pins, reference=files["reference"])[OURS])


def test_a_hub_file_that_is_not_the_pinned_one_is_refused_and_not_cached(tmp_path, files, mirror):
    overlay = dict(pretrained_cfg_overlay=dict(url=None))
    pins = {weights.hub_key(REPO, "model.safetensors"): "ab" * 32}
    ours = run_case(tmp_path, [(OURS, overlay)], {"HF_ENDPOINT": mirror.url}, pins, files["reference"])[OURS]
    assert f"is not the {'ab' * 8}... published for it" in ours["error"] and "nothing was cached" in ours["error"]
    assert cached_blobs(tmp_path) == []
    pins = {weights.hub_key(REPO, "model.safetensors"): sha(files["repos"][REPO]["model.safetensors"])}
    assert loaded(run_case(tmp_path, [(OURS, overlay)], {"HF_ENDPOINT": mirror.url}, pins, files["reference"])[OURS])


def test_sha256_check_of_a_local_file(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"weights")
    weights._check_sha256(path, sha(b"weights"), "test", fresh=False)
    with pytest.raises(weights.CheckpointError, match=r"w.pth: sha256 .* is not the 0000000000000000\.\.\."):
        weights._check_sha256(path, "0" * 64, "test", fresh=False)
    assert path.exists()  # a copy that was already there is refused, not deleted
    with pytest.raises(weights.CheckpointError, match="removed again"):
        weights._check_sha256(path, "0" * 64, "test", fresh=True)
    assert not path.exists()


# ---------------------------------------------------------------------------------------------------------------
# the versions the package declares


def test_the_floor_step_installs_the_declared_minimums():
    """.ci/floors.txt (what the second step of .ci/run installs) pins exactly the core `>=` minimums of
    pyproject.toml."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text()
    core_block = text[text.index("dependencies = [") : text.index("]", text.index("dependencies = ["))]
    declared = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9][^",;\s]*)"', core_block))  # the core's, not extras'

    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (root / ".ci" / "floors.txt").read_text(), re.MULTILINE))
    core = ("torch", "torchvision", "timm", "huggingface_hub", "safetensors")
    assert all(name in pins for name in core), pins
    for name, version in pins.items():
        assert declared.get(name) == version, (name, version, declared.get(name))
