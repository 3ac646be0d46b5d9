"""The paper-scale recipes as the official commands run them.

Each paper row's training config, as the workflow builds it (`plan.run_config`: packaged config,
the row's overrides), is read against a table of the official settings: the defaults of DART's
main.py (DeiT's) that the README's command does not override, and, where DART's README asks for "the
baseline models'" hyperparameters, the Vim and VideoMamba training scripts. A value of ours that
differs must be a named deviation, listed below with its reason and commented in the config.
Long-sequence fine-tuning rows (`finetune_from`) follow their own recipe and are not checked here.
"""
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import plan  # noqa: E402

# DART's main.py (= DeiT's main.py) defaults, github HCPLab-SYSU/DART main.py (read with git show);
# the README's command adds --batch-size 256 on 2 GPUs and --input-size 448.
MAIN_PY = {
    "train.epochs": 300, "train.opt": "adamw", "train.opt_eps": 1e-8, "train.weight_decay": 0.05,
    "train.lr": 5e-4, "train.lr_base_batch": 512,  # lr x batch_size x world_size / 512 (no --unscale-lr)
    "train.sched": "cosine", "train.warmup_epochs": 5, "train.warmup_lr": 1e-6, "train.min_lr": 1e-5,
    "train.clip_grad": None, "train.ema": True, "train.ema_decay": 0.99996,  # --model-ema on by default
    "train.amp": "off",  # --if_amp defaults to False
    "aug.label_smoothing": 0.1, "aug.mixup": 0.8, "aug.cutmix": 1.0, "aug.mixup_prob": 1.0,
    "aug.mixup_switch_prob": 0.5, "aug.reprob": 0.25, "aug.color_jitter": 0.3,
    "aug.auto_augment": "rand-m9-mstd0.5-inc1", "aug.repeated_aug": True,
    "aug.hflip": 0.5, "aug.scale": [0.08, 1.0],  # timm create_transform's defaults
    "data.interpolation": "bicubic", "data.crop_pct": 0.875,  # --train-interpolation, --eval-crop-ratio
    "model.kwargs.drop_path_rate": 0.1, "eval.use_ema": False,  # the published top-1 is the model's
    "train.batch_size": 256,
}
# Vim's scripts (github hustvl/Vim vim/scripts/pt-vim-t.sh, pt-vim-s.sh; 8 GPUs), over those defaults
VIM_T = {**MAIN_PY, "train.batch_size": 128, "model.kwargs.drop_path_rate": 0.0, "train.weight_decay": 0.1}
VIM_S = {**MAIN_PY, "train.batch_size": 64, "model.kwargs.drop_path_rate": 0.05, "train.weight_decay": 0.05,
         "train.lr": 1e-3}
# VideoMamba's image script (github OpenGVLab/VideoMamba,
# videomamba/image_sm/exp/videomamba_tiny/run224.sh)
VIDEOMAMBA = {**MAIN_PY, "train.batch_size": 512, "train.clip_grad": 5.0, "train.weight_decay": 0.1,
              "model.kwargs.drop_path_rate": 0.0, "aug.repeated_aug": False, "aug.auto_augment": "v0",
              "train.ema": False, "train.amp": "bf16"}
OFFICIAL = {
    "deit_tiny": MAIN_PY, "dart_deit_tiny": MAIN_PY, "deit_small": MAIN_PY, "dart_deit_small": MAIN_PY,
    "dart_deit_tiny_121": MAIN_PY, "dart_deit_tiny_mobilenetv3_small": MAIN_PY, "dart_deit_tiny_mnasnet": MAIN_PY,
    "dart_deit_tiny_squeezenet": MAIN_PY, "dart_deit_tiny_efficientnet_b0": MAIN_PY,
    "vim_tiny": VIM_T, "dart_vim_tiny": VIM_T, "vim_small": VIM_S, "dart_vim_small": VIM_S,
    "videomamba_tiny": VIDEOMAMBA, "dart_videomamba_tiny": VIDEOMAMBA,
}
# (row family, key) -> reason; each is commented in the row's training config ("deviation (key)")
DEVIATIONS = {
    (id(MAIN_PY), "train.batch_size"): "128 per GPU x 8 = 1024, DeiT's own global batch; lr scales linearly",
}


def paper_config() -> dict:
    return {**yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), "scale": "paper"}


def value(cfg: dict, key: str):
    for part in key.split("."):
        cfg = (cfg or {}).get(part)
    return cfg


def test_every_paper_row_trained_from_scratch_is_in_the_table():
    cfg = paper_config()
    rows = plan.experiments(cfg)
    checked = {e for e in plan.trained(cfg) if rows[e]["task"] == "classification" and not rows[e]["finetune_from"]}
    assert checked == set(OFFICIAL)


@pytest.mark.parametrize("eid", sorted(OFFICIAL))
def test_paper_configs_follow_the_official_recipe(eid):
    cfg = paper_config()
    run = plan.run_config(cfg, eid, 0, None, ROOT)
    table = OFFICIAL[eid]
    wrong = {}
    for key, official in table.items():
        ours = value(run, key)
        if isinstance(official, float) and isinstance(ours, (int, float)):
            same = ours == pytest.approx(official)
        else:
            same = ours == official
        if same:
            continue
        reason = DEVIATIONS.get((id(table), key))
        if reason is None:
            wrong[key] = (ours, official)
            continue
        text = Path(plan.train_config_path(plan.experiments(cfg)[eid]["train"], ROOT)).read_text()
        assert f"deviation ({key})" in text, f"{eid}: deviation of {key} ({reason}) is not commented in its config"
    assert not wrong, f"{eid}: ours vs official {wrong}"
    # the input: 448 px for DART (the README's --input-size 448), 224 for the grid baselines
    assert run["data"]["img_size"] == (448 if run["model"]["name"].startswith("dart_") else 224)
