"""The YAML recipes hold the paper's numbers, every config file parses, and overrides follow their precedence."""

import glob
import os

import pytest
import timm
import torch
from timm.data import resolve_data_config
from timm.layers import DropPath

import inceptionnext  # noqa: F401  (registers the models the configs name)
from inceptionnext.data.shapes import make_shapes_folder
from inceptionnext.train import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    load_yaml,
    parse_config,
    plan_batch,
    save_config,
)
from inceptionnext.train.engine import create_training_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("_")
)


def cfg_of(rel):
    return parse_config(["--config", os.path.join(REPO, "configs", rel)])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A small image folder for the recipes that choose from the training images (adapt_to_data)."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_folder(str(root), train=8, val=2, size=64, seed=0)
    return str(root)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_parses_and_builds_its_model(path, image_folder):
    """Build each config's model the way the engine does (drop path, dropout, a new class count), on the meta
    device so even base costs nothing, and run a small input through it."""
    cfg = parse_config(["--config", path, "--data-dir", image_folder])
    if cfg.task != "classification":
        pytest.skip(f"a {cfg.task} config: its own tests build its model")
    assert timm.is_model(cfg.model), cfg.model
    if cfg.task == "segmentation":
        with torch.device("meta"):
            model = timm.create_model(
                cfg.model, num_classes=7, drop_path_rate=cfg.drop_path, head_channels=cfg.head_channels
            ).eval()
            assert model(torch.empty(2, 3, 64, 64)).shape == (2, 7, 64, 64)
        drop_paths = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
        assert max(drop_paths, default=0.0) == pytest.approx(cfg.drop_path)
        assert cfg.iters % cfg.eval_interval == 0
        return
    with torch.device("meta"):
        model = create_training_model(cfg.model, 7, drop_path_rate=cfg.drop_path, drop_rate=cfg.drop)
        assert model(torch.empty(2, 3, 64, 64)).shape == (2, 7)
    drop_paths = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert max(drop_paths, default=0.0) == pytest.approx(cfg.drop_path)
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert (cfg.drop in dropouts) if cfg.drop else not any(dropouts), dropouts  # the head's dropout
    size = cfg.img_size or (32 if cfg.dataset == "digits" else None)
    data_cfg = resolve_data_config({"img_size": size, "crop_pct": cfg.crop_pct}, model=model)
    assert data_cfg["input_size"] == (3, size or 224, size or 224)


def test_imagenet_recipe_numbers():
    expected_drop_path = {"inceptionnext_t": 0.1, "inceptionnext_s": 0.3, "inceptionnext_b": 0.4}
    for name, dp in expected_drop_path.items():
        c = cfg_of(f"imagenet/{name}.yaml")
        assert (c.model, c.drop_path, c.opt, c.weight_decay, c.epochs, c.warmup_epochs, c.sched) == (
            name,
            dp,
            "adamw",
            0.05,
            300,
            20,
            "cosine",
        )
        assert (c.aa, c.mixup, c.cutmix, c.smoothing, c.reprob) == ("rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.1, 0.25)
        accum, lr, _ = plan_batch(c, 8)
        assert c.batch_size * 8 * accum == 4096 and lr == pytest.approx(4e-3)
        assert not c.ema


def test_atto_recipe():
    c = cfg_of("imagenet/inceptionnext_a.yaml")
    assert (c.epochs, c.lr, c.lr_batch, c.warmup_epochs, c.aa, c.mixup, c.reprob, c.color_jitter) == (
        600,
        1e-3,
        1280,
        5,
        "rand-m5-inc1-mstd101",
        0.2,
        0.1,
        0.0,
    )
    assert c.warmup_lr == c.min_lr == 5e-7
    assert plan_batch(c, 8)[1] == pytest.approx(1e-3)  # 160 x 8 GPUs = 1280


@pytest.mark.parametrize("variant", ["k5", "k3", "k3_par1_2", "k3_par1_4", "k3_par1_8", "k3_par1_16", "k3_par3_8"])
def test_convnext_variants_use_ema(variant):
    c = cfg_of(f"imagenet/convnext_tiny_{variant}.yaml")
    assert c.model == f"convnext_tiny_{variant}" and c.ema and c.ema_decay == 0.9999 and c.lr == 4e-3


def test_finetune_384_recipe():
    c = cfg_of("finetune/inceptionnext_b_384.yaml")
    assert (c.img_size, c.epochs, c.lr, c.sched, c.warmup_epochs, c.mixup, c.cutmix) == (
        384,
        30,
        5e-5,
        "constant",
        0,
        0.0,
        0.0,
    )
    assert (c.ema, c.ema_decay, c.drop_path, c.drop, c.pretrained) == (True, 0.9999, 0.7, 0.5, True)
    accum, lr, _ = plan_batch(c, 8)
    assert c.batch_size * 8 * accum == 1024 and lr == pytest.approx(5e-5)


def test_lr_scales_linearly_with_global_batch():
    c = cfg_of("imagenet/inceptionnext_t.yaml")
    assert plan_batch(c, 4)[1] == pytest.approx(4e-3)  # half the GPUs: twice the accumulation, the recipe's lr
    c2 = apply_overrides(c, {"grad_accum": 4}, "test")  # accumulation fixed: half the global batch, half the lr
    assert plan_batch(c2, 4)[1] == pytest.approx(2e-3)
    assert plan_batch(apply_overrides(c, {"lr_batch": None}, "test"), 4)[1] == 4e-3  # absolute lr


def test_precedence_defaults_yaml_cli_set(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("_base_: base.yaml\nepochs: 7\nlr: 1e-3\n")
    (tmp_path / "base.yaml").write_text("epochs: 5\nbatch_size: 16\nmean: [0.5, 0.5, 0.5]\n")
    c = parse_config(["--config", str(y), "--lr", "2e-3", "--set", "epochs=9", "--data-dir", "/x"])
    assert (c.epochs, c.batch_size, c.lr, c.data_dir, c.mean) == (9, 16, 2e-3, "/x", (0.5, 0.5, 0.5))
    assert c.weight_decay == TrainConfig().weight_decay
    assert parse_config(["--ema", "yes", "--weights", "none"]).ema is True


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="'amp'.*must be one of none, bf16, fp16"):
        parse_config(["--amp", "fp8"])
    with pytest.raises(ConfigError, match="'scale'.*expected 2 values"):
        parse_config(["--scale", "0.1,0.5,0.9"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml("/nonexistent.yaml")
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        parse_config(["--set", "epochs"])


def test_ade20k_segmentation_recipes():
    """Table 6 (UperNet, as Swin's) and Table 7 (Semantic FPN, as PoolFormer's) recipes, drop path per size."""
    for size, up_dp, fpn_dp in (("t", 0.2, 0.1), ("s", 0.3, 0.2), ("b", 0.4, 0.2)):
        u = cfg_of(f"segmentation/upernet_inceptionnext_{size}.yaml")
        assert (u.task, u.dataset, u.iters, u.opt, u.weight_decay, u.sched, u.decay_rate, u.warmup_iters) == (
            "segmentation",
            "ade20k",
            160000,
            "adamw",
            0.01,
            "poly",
            1.0,
            1500,
        )
        assert (u.drop_path, u.aux_weight, u.crop_size, tuple(u.base_size), tuple(u.seg_scale), u.cat_max_ratio) == (
            up_dp,
            0.4,
            512,
            (2048, 512),
            (0.5, 2.0),
            0.75,
        )
        assert u.batch_size * 8 == 16 and u.sync_bn and u.pretrained
        assert plan_batch(u, 8)[:2] == (1, pytest.approx(6e-5))
        f = cfg_of(f"segmentation/fpn_inceptionnext_{size}.yaml")
        assert (f.iters, f.weight_decay, f.decay_rate, f.warmup_iters, f.drop_path) == (40000, 1e-4, 0.9, 0, fpn_dp)
        assert f.batch_size * 8 == 32 and plan_batch(f, 8)[:2] == (1, pytest.approx(2e-4))
        assert plan_batch(f, 4)[:2] == (2, pytest.approx(2e-4))  # fewer GPUs: the global batch held by accumulation


# every value the fault review found either crashing (a traceback, a failure mid-epoch) or silently accepted
BAD_VALUES = {
    "lr": ["-1", "nan", "inf"],
    "workers": ["-1"],
    "smoothing": ["2"],
    "drop_path": ["5"],
    "ema_decay": ["2", "1"],
    "hflip": ["7"],
    "mixup": ["-1"],
    "crop_pct": ["0"],
    "warmup_epochs": ["-1"],
    "epochs": ["1e18", "0"],
    "batch_size": ["0"],
    "mean": ["0.5,nan,0.5"],
    "scale": ["0,1"],
    "dist_timeout": ["0"],
}


@pytest.mark.parametrize("key,value", [(k, v) for k, vs in BAD_VALUES.items() for v in vs])
def test_out_of_range_values_are_one_line_naming_key_value_and_range(key, value):
    with pytest.raises(ConfigError) as info:
        parse_config(["--set", f"{key}={value}"])
    text = str(info.value)
    assert "\n" not in text and f"config key '{key}'" in text and "must be in" in text, text


def test_every_train_key_has_a_description_and_numeric_keys_a_range(capsys):
    from inceptionnext.train.command_line import build_parser
    from inceptionnext.train.config import config_fields
    from inceptionnext.train.task import TASKS

    help_text = " ".join(build_parser().format_help().split())
    fields = {}
    for task in TASKS.values():
        fields.update(config_fields(task.settings.config))
    for name, f in fields.items():
        assert f.metadata.get("help"), name
        assert f.metadata["help"].split(";")[0][:30] in help_text, name
        if name == "img_size":  # checked against the model's own minimum (check_img_size), one rule everywhere
            continue
        if f.type in ("int", "float", "Optional[int]", "Optional[float]") or "float" in str(f.type):
            assert f.metadata.get("allowed") is not None, f"{name} has no allowed range"
            assert str(f.metadata["allowed"]) in help_text, name


def _bomb(tmp_path, key="lr", levels=8):
    """A few hundred bytes of nested YAML anchors under one key that expand to 9**levels strings."""
    lines = [f"{key}:", '  - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  - &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("key", ["lr", "mean", "model", "_base_"])
def test_a_yaml_alias_bomb_gives_a_short_error(tmp_path, key):
    path = _bomb(tmp_path, key)
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError) as info:
        parse_config(["--config", str(path)])
    assert len(str(info.value)) < 300, str(info.value)[:300]


def test_base_includes_only_yaml_files_and_never_echoes_a_files_lines(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:*:20228:0:99999:7:::\n")
    cases = {
        "list.yaml": ("_base_: [missing.yaml]\n", "config file not found: .*missing.yaml"),
        "shadow.yaml": (f"_base_: {secret}\n", "_base_ names YAML files"),
        "binary.yaml": ("_base_: bin.yaml\n", "bin.yaml is not UTF-8 text"),
        "broken.yaml": ('lr: 1\nsecret: "password123\n  x: [\n', "not valid YAML at line 4, column 1"),
        "escape.yaml": ('"\\e[2Jevil": 1\n', r"unknown config key '\\x1b\[2Jevil'"),
        "control.yaml": ("lr: 1\x07\n", "character #x07 is not allowed"),
        "numeric_key.yaml": ("1: 2\n", "config keys in .* are names"),
    }
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x01\xff\xfe" * 50)
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=message) as info:
            parse_config(["--config", str(tmp_path / name)])
        shown = str(info.value)
        assert "root:" not in shown and "password" not in shown and "\x1b" not in shown and "\x07" not in shown
    # a list of bases is merged in order
    (tmp_path / "b1.yaml").write_text("epochs: 5\nlr: 1e-3\n")
    (tmp_path / "b2.yaml").write_text("epochs: 6\n")
    (tmp_path / "top.yml").write_text("_base_: [b1.yaml, b2.yaml]\nbatch_size: 4\n")
    c = parse_config(["--config", str(tmp_path / "top.yml")])
    assert (c.epochs, c.lr, c.batch_size) == (6, 1e-3, 4)


def test_a_key_of_another_task_is_refused_naming_its_task(tmp_path):
    with pytest.raises(
        ConfigError, match="'crop_size' in the command line is a segmentation key; this run's task is classification"
    ):
        parse_config(["--crop-size", "64"])
    with pytest.raises(ConfigError, match="'mixup' in --set is a classification key; this run's task is detection"):
        parse_config(["--task", "detection", "--set", "mixup=0.8"])
    with pytest.raises(ConfigError, match="'task': 'depth' is not a task; known: classification, detection"):
        parse_config(["--task", "depth"])
    # a run's own config.yaml holds every key at its value: another task's keys at their defaults are no error
    dumped = tmp_path / "config.yaml"
    save_config(parse_config(["--task", "segmentation", "--crop-size", "64"]), str(dumped))
    assert parse_config(["--config", str(dumped)]).crop_size == 64


def test_train_help_groups_the_keys_by_task(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    out = capsys.readouterr().out
    order = [
        out.index(h)
        for h in (
            "keys for every task:",
            "classification keys (task: classification):",
            "detection keys (task: detection):",
            "segmentation keys (task: segmentation):",
        )
    ]
    assert order == sorted(order)
    det, seg = out[order[2] : order[3]], out[order[3] :]
    assert "--crop-size" in seg and "--mixup" not in seg and "--fpn-channels" in det
    assert "--dataset, the first by default: ade20k:" in " ".join(seg.split())
