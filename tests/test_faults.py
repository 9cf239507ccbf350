"""Runs that fail the way real runs fail lose nothing: kills inside each checkpoint write, a full disk, flipped
bits in a checkpoint, a stopped distributed rank. A tiny model and a scripted validation keep it fast."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types
import zipfile

import pytest
import torch
from test_train import run_script  # (and its tiny models, registered in this process too)

from inceptionnext.tasks.classification import task as classification_task
from inceptionnext.train import CheckpointError, Trainer, fit, parse_config
from inceptionnext.train.checkpoint import load_checkpoint_file
from inceptionnext.train.distributed import DistEnv
from inceptionnext.weights import CheckpointError as WeightsCheckpointError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMP = re.compile(r"^\..*\.tmp$")

# test_train's tiny registered model, and a validation that returns a scripted top-1 per epoch so that which epoch
# is best is known; the killed run and the resumed one can be given different scores for the same epoch.
PRELUDE = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, REPO_PATH)
    sys.path.insert(0, os.path.join(REPO_PATH, "tests"))
    import test_train  # noqa: F401  (registers its tiny models with timm)
    from inceptionnext.tasks.classification import task as C

    def scripted_evaluate(scores):
        def evaluate(model, loader, device, env=None, amp="none", channels_last=False, progress=False, desc=""):
            epoch = int(desc.split()[-1])
            return {"loss": 1.0, "top1": scores.get(epoch, 1.0), "top5": 100.0, "count": 12}
        C.evaluate_with_report = lambda *a, **k: (evaluate(*a, **k), None)  # what the task scores each epoch with
""")

KILLED = PRELUDE + textwrap.dedent("""
    scripted_evaluate({1: 10.0, 2: 20.0, 3: 30.0})   # every epoch is a new best
    from inceptionnext.utils import files as W
    where, target, nth = sys.argv[1].split(":")
    counts = {}

    def tick(name):
        counts[name] = counts.get(name, 0) + 1
        return counts[name] == int(nth) and name == target

    if where == "write":  # SIGKILL half-way through writing the nth copy of target
        write = W._HeldErrorFile.write
        def dying_write(self, data):
            out = write(self, data)
            mine = os.path.basename(self.raw.name).startswith(f".{target}.")
            if mine and self.raw.tell() > 1000 and not getattr(self, "counted", False):
                self.counted = True  # once per file written
                if tick(target):
                    self.raw.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            return out
        W._HeldErrorFile.write = dying_write
    else:  # SIGKILL right after the nth rename onto target
        replace = os.replace
        def dying_replace(src, dst, *a, **k):
            replace(src, dst, *a, **k)
            if os.path.basename(str(dst)) == target and tick(target):
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = dying_replace
    from inceptionnext.train import fit, parse_config
    fit(parse_config(sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from test_train import make_folder

    return make_folder(tmp_path_factory.mktemp("faults"))


def _args(tmp_path, data, experiment="run", epochs=3):
    return [
        "--model",
        "_test_plain_net",
        "--data-dir",
        str(data),
        "--img-size",
        "32",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--epochs",
        str(epochs),
        "--warmup-epochs",
        "0",
        "--aa",
        "none",
        "--color-jitter",
        "0",
        "--output",
        str(tmp_path / "out"),
        "--experiment",
        experiment,
        "--progress",
        "false",
        "--plot",
        "false",
    ]


def _run_script(tmp_path, text, *args, timeout=240):
    return run_script(
        tmp_path,
        text,
        *args,
        timeout=timeout,
        start_new_session=True,  # its own process group: a signal meant for the killed run reaches nothing else
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1"),  # a native crash shows its stack
    )


RESUMED = PRELUDE + textwrap.dedent("""
    import json
    scripted_evaluate({int(k): v for k, v in json.loads(sys.argv[1]).items()})
    from inceptionnext.train import fit, parse_config
    res = fit(parse_config(["--resume", sys.argv[2]]))
    print(json.dumps(dict(epochs_done=res.epochs_done, best_checkpoint=res.best_checkpoint,
                          best_epoch=res.best_epoch, best_top1=res.best_top1)))
""")


def _resume_scripted(run_dir, scores, tmp_path):
    """Resume, with validation scripted to score re-run epochs lower than the killed run did: in a fresh process,
    as a user's resume runs (and apart from whatever the test process has loaded before)."""
    p = _run_script(tmp_path, RESUMED, json.dumps({str(k): v for k, v in scores.items()}), str(run_dir / "last.pth"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return types.SimpleNamespace(**json.loads(p.stdout.strip().splitlines()[-1]))


# kill points inside the second epoch's checkpoint writes: half-way through writing model_best.pth, between its
# rename and the write of last.pth, half-way through last.pth, right after last.pth's rename
KILLS = ["write:model_best.pth:2", "replace:model_best.pth:2", "write:last.pth:2", "replace:last.pth:2"]


@pytest.mark.parametrize("kill", KILLS)
def test_a_kill_inside_each_checkpoint_write_keeps_model_best_consistent(tmp_path, data, kill, monkeypatch):
    p = _run_script(tmp_path, KILLED, kill, *_args(tmp_path, data))
    assert p.returncode == -9, p.stdout[-2000:] + p.stderr[-2000:]
    run = tmp_path / "out" / "run"
    temps = [f for f in os.listdir(run) if TEMP.match(f)]
    assert bool(temps) == kill.startswith("write"), temps  # a kill mid-write leaves its temp file behind
    # every file there is whole; last.pth never records a best that model_best.pth does not hold
    last, best = load_checkpoint_file(str(run / "last.pth")), load_checkpoint_file(str(run / "model_best.pth"))
    assert best["epoch"] >= last["best"]["epoch"]
    # the resumed run re-scores epoch 2 lower (as a non-deterministic re-run may): the best weights written
    # before the kill must stay the best, and the report must name the epoch model_best.pth really holds
    res = _resume_scripted(run, {1: 10.0, 2: 5.0, 3: 6.0}, tmp_path)
    assert res.epochs_done == 3
    held = load_checkpoint_file(res.best_checkpoint)
    assert (held["epoch"], held["best"]["top1"]) == (res.best_epoch, res.best_top1)
    assert res.best_epoch == (1 if kill == "write:model_best.pth:2" else 2)
    assert not [f for f in os.listdir(run) if TEMP.match(f)]  # swept at start-up


def test_resume_repairs_a_lagging_best_file_or_says_the_weights_are_lost(tmp_path, data, monkeypatch, capsys):
    scores = {1: 10.0, 2: 20.0, 3: 15.0}
    monkeypatch.setattr(
        classification_task,
        "evaluate_with_report",
        lambda *a, desc="", **k: (
            {"loss": 1.0, "top1": scores[int(desc.split()[-1])], "top5": 100.0, "count": 12},
            None,
        ),
    )
    cfg = parse_config(_args(tmp_path, data, epochs=3) + ["--stop-after-epoch", "1"])
    fit(cfg)
    run = tmp_path / "out" / "run"
    epoch1 = tmp_path / "epoch1.pth"
    shutil.copyfile(run / "model_best.pth", epoch1)
    fit(parse_config(["--resume", str(run / "last.pth"), "--stop-after-epoch", "2"]))
    # as an older version could leave it: last.pth (epoch 2) records the best at epoch 2, model_best.pth is epoch 1
    shutil.copyfile(epoch1, run / "model_best.pth")
    capsys.readouterr()
    Trainer(parse_config(["--resume", str(run / "last.pth")]), DistEnv())
    assert "rebuilt it from" in capsys.readouterr().out
    assert load_checkpoint_file(str(run / "model_best.pth"))["epoch"] == 2
    # lagging by more than the last epoch: the weights are gone; the run says so and reports what it holds
    res = fit(parse_config(["--resume", str(run / "last.pth")]))  # epoch 3 scores 15 < 20: not a best
    shutil.copyfile(epoch1, run / "model_best.pth")
    capsys.readouterr()
    trainer = Trainer(parse_config(["--resume", str(run / "last.pth")]), DistEnv())  # (a changed schedule: refused)
    out = capsys.readouterr().out
    assert "does not hold the best epoch 2" in out and "those weights are lost" in out, out
    assert trainer.best["epoch"] == 1 and res.best_epoch == 2


def _flip_tensor_bytes(path, count=64):
    """Flip `count` bytes inside the largest tensor record of a torch zip file (not its zip structure)."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start + info.file_size // 4)
        chunk = bytearray(f.read(count))
        f.seek(start + info.file_size // 4)
        f.write(bytes(b ^ 0xFF for b in chunk))


def test_a_bit_flipped_checkpoint_is_refused_on_resume_and_load(tmp_path, data, capsys):
    res = fit(parse_config(_args(tmp_path, data, epochs=2) + ["--stop-after-epoch", "1"]))
    last = res.last_checkpoint
    _flip_tensor_bytes(last)
    torch.load(last, weights_only=True)  # still unpickles: only the checksum can tell
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        fit(parse_config(["--resume", last]))
    from inceptionnext.model_file import load_model

    with pytest.raises(WeightsCheckpointError, match="does not match the checksum"):
        load_model(last)
    from inceptionnext.cli import main

    assert main(["verify", last, res.best_checkpoint]) == 1
    out, err = capsys.readouterr()
    assert "does not match the checksum" in err and f"ok: {res.best_checkpoint}" in out


def test_an_empty_last_pth_says_why(tmp_path):
    empty = tmp_path / "last.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*: it is empty \(0 bytes\)"):
        load_checkpoint_file(str(empty))
    cut = tmp_path / "cut.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 1}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*: \S+"):
        load_checkpoint_file(str(cut))


def _dev_full_temp_files(monkeypatch, name):
    """Writes of `name` go to /dev/full (ENOSPC from the kernel on every write), as on a full disk."""
    from inceptionnext.utils import files

    real = files.tempfile.mkstemp

    def mkstemp(*a, prefix="", **k):
        fd, tmp = real(*a, prefix=prefix, **k)
        if prefix.startswith(f".{name}."):
            os.remove(tmp)
            os.symlink("/dev/full", tmp)
        return fd, tmp

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)


def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, data, monkeypatch, capsys):
    res = fit(parse_config(_args(tmp_path, data, epochs=2) + ["--stop-after-epoch", "1"]))
    before = open(res.last_checkpoint, "rb").read()
    _dev_full_temp_files(monkeypatch, "last.pth")
    from inceptionnext.cli import main

    assert main(["train", "--resume", res.last_checkpoint]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.fullmatch(
        rf"error: cannot write {re.escape(res.last_checkpoint)}: no space left on device; the "
        r"previous last.pth is kept",
        err,
    ), err
    assert open(res.last_checkpoint, "rb").read() == before
    assert not [f for f in os.listdir(os.path.dirname(res.last_checkpoint)) if TEMP.match(f)]


def _can_mount_tmpfs():
    if not shutil.which("unshare"):
        return False
    return (
        subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a mountable tmpfs (user namespaces)")
@pytest.mark.parametrize("fmt", ["torchscript", "torch.export"])
def test_export_into_a_full_tmpfs_is_one_line_and_leaves_nothing(tmp_path, fmt):
    import timm

    from inceptionnext.model_file import save_model

    weights = tmp_path / "a.safetensors"
    save_model(timm.create_model("inceptionnext_a", num_classes=10), weights)
    full = tmp_path / "full"
    full.mkdir()
    cmd = (
        f"mount -t tmpfs -o size=2m none {full} && {sys.executable} -m inceptionnext export inceptionnext_a "
        f"--weights {weights} --format {fmt} --img-size 64 --no-check -o {full}/model.pt; echo rc=$?; "
        f"ls -a {full}"
    )
    p = subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"),
    )
    assert "rc=1" in p.stdout, p.stdout + p.stderr[-3000:]  # not 134 (SIGABRT)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {full}/model.pt: no space left on device"], p.stderr[-3000:]
    assert p.stdout.split("rc=1")[1].split() == [".", ".."]  # no temp file left behind


STOPPED_RANK = PRELUDE + textwrap.dedent("""
    from inceptionnext.train.engine import Trainer
    check = Trainer._check_finite
    def check_or_stop(self, loss, epoch, step):  # rank 1 is stopped (SIGSTOP), not killed, at its second step
        if os.environ["RANK"] == "1" and step == 1:
            os.kill(os.getpid(), signal.SIGSTOP)
        return check(self, loss, epoch, step)
    Trainer._check_finite = check_or_stop
    from inceptionnext.cli import main
    sys.exit(main(["train"] + sys.argv[1:]))
""")


def test_a_stopped_rank_ends_the_run_after_dist_timeout_naming_rank_and_collective(tmp_path, data):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED_RANK.replace("REPO_PATH", repr(REPO)))
    args = _args(tmp_path, data, epochs=1) + ["--batch-size", "4", "--dist-timeout", "5"]
    procs = []
    for rank in (0, 1):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    try:
        t0 = time.time()
        out, err = procs[0].communicate(timeout=240)
        waited = time.time() - t0
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.match(
        r"error: rank 0: all_reduce timed out after 5 s waiting for the other "
        r"ranks",
        errors[0],
    ), err[-3000:]
    assert waited < 200
