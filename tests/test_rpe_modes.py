"""The study code's position-embedding variants (rpe_mode, SPEC 13.1): sizes, keys, each mode's maths by hand,
training, checkpoints, config and the study's --vary axis over them."""

import argparse
import csv
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.engine.checkpoint import load_checkpoint
from spikedriven.errors import CheckpointError, ConfigError
from spikedriven.models.sdt_blocks import RPE_MODES, sinusoidal_table

from helpers import DEMO, original_style_checkpoint, run_cli, tiny_model_kwargs

MODES = list(RPE_MODES)
# SPEC 13.1's parameter counts of the CIFAR-10 2-256 model, which include the original's two dead 8x8 talking-heads
# convolutions (64 weights a block) that our models do not build
PUBLISHED_PARAMS = {"conv": 2_567_082, "linear": 2_632_618, "sinusoidal": 2_567_083, "learnable": 2_583_466,
                    "dilated": 3_156_906}
EXTRA_KEYS = {"conv": {}, "linear": {"patch_embed.rpe_linear.weight": (256, 256)},
              "sinusoidal": {"patch_embed.rpe_scale": (1,)},
              "learnable": {"patch_embed.rpe_pos_embed_h": (1, 128, 64, 1), "patch_embed.rpe_pos_embed_w": (1, 128, 1, 64)},
              "dilated": {"patch_embed.rpe_dilated.weight": (256, 256, 3, 3)}}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_has_the_original_keys_and_parameter_count(mode):
    model = timm.create_model("sdt", rpe_mode=mode)
    assert sum(p.numel() for p in model.parameters()) + 2 * 64 == PUBLISHED_PARAMS[mode]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["patch_embed.rpe_conv.weight"] == (256, 256, 3, 3)  # built in every mode, as the original did
    for key, shape in EXTRA_KEYS[mode].items():
        assert shapes[key] == shape
    others = {k for m in MODES if m != mode for k in EXTRA_KEYS[m]}
    assert not others & set(shapes)
    assert model.model_args["rpe_mode"] == mode


def test_the_sinusoidal_table_by_hand():
    table = sinusoidal_table(8, 2, 3)
    f = 10000 ** -0.5  # the second pair of each half: 10000^(-2/4)
    for h in range(2):
        for w in range(3):
            expected = [math.sin(h), math.cos(h), math.sin(h * f), math.cos(h * f),
                        math.sin(w), math.cos(w), math.sin(w * f), math.cos(w * f)]
            assert table[:, h, w].tolist() == pytest.approx(expected, abs=1e-6)
    # an odd half (D = 6, 3 channels each): pairs start at even channel numbers in both halves, so channel 3 stays 0
    table = sinusoidal_table(6, 2, 2)
    g = 10000 ** (-1 / 3)
    assert table[:, 1, 1].tolist() == pytest.approx([math.sin(1), math.cos(1), math.sin(10000 ** (-2 / 3)), 0.0,
                                                      math.sin(g), math.cos(g)], abs=1e-6)


def _sps(mode: str):
    model = timm.create_model("sdt", rpe_mode=mode, **tiny_model_kwargs(spike_mode="if", v_threshold=1.0))
    sps = model.patch_embed.eval()
    with torch.no_grad():  # a batch norm that shows its input: mean 0, variance 1, no affine change (eps aside)
        sps.rpe_bn.running_mean.zero_()
        sps.rpe_bn.running_var.fill_(1.0)
    return sps


def _by_hand(sps, mode: str, feat: torch.Tensor) -> torch.Tensor:
    """SPEC 13.1 written out: s = IF(feat) (one step: feat >= 1), r = RPE(s), rpe_bn(r) + feat."""
    s = (feat >= 1.0).float()[0]  # [B, D, H, W] at T = 1
    d, h, w = s.shape[1:]
    if mode == "conv":
        r = F.conv2d(s, sps.rpe_conv.weight, padding=1)
    elif mode == "dilated":
        r = F.conv2d(s, sps.rpe_dilated.weight, padding=2, dilation=2)
    elif mode == "linear":
        r = torch.einsum("oc,bchw->bohw", sps.rpe_linear.weight, s)
    elif mode == "sinusoidal":
        r = (sps.rpe_scale * sinusoidal_table(d, h, w)).expand_as(s)
    else:
        rows = sps.rpe_pos_embed_h[0, :, :h, 0][:, :, None].expand(-1, h, w)
        cols = sps.rpe_pos_embed_w[0, :, 0, :w][:, None, :].expand(-1, h, w)
        r = s + torch.cat([rows, cols])[None]
    return (r / math.sqrt(1.0 + sps.rpe_bn.eps))[None] + feat


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_computes_the_spec_by_hand(mode):
    torch.manual_seed(0)
    sps = _sps(mode)
    with torch.no_grad():
        for name, p in sps.named_parameters():
            if not name.startswith("rpe_bn"):
                p.normal_()
        feat = torch.randn(1, 2, 32, 5, 5) * 1.5
        assert torch.allclose(sps.add_position(feat), _by_hand(sps, mode, feat), atol=1e-4)
    # and the same gradients for every parameter of the position code (not the spikes': ours have a surrogate)
    weights = torch.randn(1, 2, 32, 5, 5)
    own = [p for name, p in sps.named_parameters() if name.startswith("rpe_") and not name.startswith("rpe_bn")]
    ours = torch.autograd.grad((sps.add_position(feat) * weights).sum(), own, allow_unused=True)
    theirs = torch.autograd.grad((_by_hand(sps, mode, feat) * weights).sum(), own, allow_unused=True)
    for a, b in zip(ours, theirs):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-4)


def test_sinusoidal_discards_the_spikes():
    sps = _sps("sinusoidal")
    feat = torch.randn(1, 2, 32, 4, 4)
    with torch.no_grad():
        # the same features with other spikes: the position code is the same, so the outputs differ by the features
        out = sps.add_position(feat) - feat
        out2 = sps.add_position(feat + 10.0) - (feat + 10.0)
    assert torch.allclose(out, out2, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_two_steps(mode):
    torch.manual_seed(0)
    model = timm.create_model("sdt", rpe_mode=mode, **tiny_model_kwargs())
    own = [k for k in model.state_dict() if k in EXTRA_KEYS[mode] or (mode == "conv" and k.endswith("rpe_conv.weight"))]
    before = {k: model.state_dict()[k].clone() for k in own}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = dict(model.named_parameters())
    assert all(params[k].grad is not None and torch.isfinite(params[k].grad).all() for k in own)
    if mode != "sinusoidal":  # rpe_bn cancels the scale, up to eps: its gradient is all but 0
        assert [k for k in own if not torch.equal(before[k], params[k].detach())] == own


def test_an_unknown_mode_or_a_grid_too_large_for_learnable_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="rpe_mode must be one of conv, linear, sinusoidal, learnable, dilated, got 'all'"):
        timm.create_model("sdt", rpe_mode="all")
    with pytest.raises(ConfigError, match="at most 64 x 64 tokens.*gives 128 x 128"):
        timm.create_model("sdt", rpe_mode="learnable", img_size=512)
    code, _, err = run_cli(["train", "-c", DEMO, "--rpe-mode", "dilate", "--output", str(tmp_path / "r")], capsys)
    assert code == 2 and "rpe_mode must be one of" in err and "Traceback" not in err
    code, _, err = run_cli(["train", "-c", DEMO, "--model", "spikformer_cifar", "--rpe-mode", "linear", "--output",
                            str(tmp_path / "r")], capsys)
    assert code == 2 and "takes no rpe_mode" in err


def test_the_study_code_config_and_flag_select_the_mode(tmp_path):
    from original_configs import ORIGINAL_CONFIGS

    path = tmp_path / "study.yml"
    path.write_text(ORIGINAL_CONFIGS["study-code-conf/cifar10/2_256_300E_t4.yml"].replace("rpe_mode: conv",
                                                                                         "rpe_mode: dilated"))
    assert load_config(path).model_settings()["rpe_mode"] == "dilated"
    assert load_config(path, {"rpe_mode": "linear"}).model_settings()["rpe_mode"] == "linear"


def test_the_original_checkpoint_of_a_mode_loads_and_names_a_mismatch(tmp_path):
    model = timm.create_model("sdt", rpe_mode="linear", **tiny_model_kwargs())
    ckpt = original_style_checkpoint(model, tmp_path / "linear.pth.tar")
    ckpt["args"] = argparse.Namespace(**vars(ckpt["args"]), rpe_mode="linear")
    torch.save(ckpt, tmp_path / "linear.pth.tar")
    fresh = timm.create_model("sdt", rpe_mode="linear", **tiny_model_kwargs())
    load_checkpoint(fresh, tmp_path / "linear.pth.tar")
    assert torch.equal(fresh.patch_embed.rpe_linear.weight, model.patch_embed.rpe_linear.weight)
    with pytest.raises(CheckpointError, match="rpe_linear"):
        load_checkpoint(timm.create_model("sdt", rpe_mode="conv", **tiny_model_kwargs()), tmp_path / "linear.pth.tar")


VARY = ["study", "-c", DEMO, "--modes", "if_soft", "--thresholds", "1.0", "--seeds", "1", "--epochs", "1",
        "--warmup-epochs", "0", "--embed-dim", "16", "--num-heads", "2", "--set", "val_batch_size=360",
        "--vary", "rpe_mode=conv,dilated"]


@pytest.mark.slow
def test_a_study_varies_the_mode_and_compares_each_with_conv(tmp_path, capsys):
    folder = tmp_path / "s"
    assert main([*VARY, "--study-dir", str(folder)]) == 0
    runs = sorted(p.name for p in (folder / "runs").iterdir() if p.is_dir())
    assert runs == ["sdt-rpe_mode=conv-if_soft-uth1-seed42", "sdt-rpe_mode=dilated-if_soft-uth1-seed42"]
    recorded = load_config(folder / "runs" / runs[1] / "config.yaml")
    assert recorded.model_settings()["rpe_mode"] == "dilated" and recorded.model_settings()["embed_dim"] == 16
    with open(folder / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["rpe_mode"], r["verdict"]) for r in table][0] == ("conv", "baseline")
    finals = [float(r["final_top1_mean"]) for r in table]
    assert float(table[1]["vs_baseline"]) == pytest.approx(finals[1] - finals[0])
    md = (folder / "results.md").read_text()
    assert "varying rpe_mode" in md.splitlines()[0] and "rpe_mode=conv with the same neuron" in md


def test_the_vary_axis_refuses_bad_input(tmp_path, capsys):
    args = [*VARY, "--study-dir", str(tmp_path / "s"), "--dry-run"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and out.count("pending") == 2 and "sdt-rpe_mode=dilated-if_soft-uth1-seed42" in out
    for extra, says in ((["--vary", "rpe_mode"], "--vary takes KEY=V1,V2"),
                        (["--vary", "spike_mode=lif,if"], "use --modes"),
                        (["--vary", "rpe_mode=linear"], "names rpe_mode twice"),
                        (["--set", "rpe_mode=linear"], "both set for every run and varied"),
                        (["--baseline", "rpe_mode=linear"], "takes the values conv, dilated"),
                        (["--baseline", "encoding=rate"], "does not vary"),
                        (["--vary", "depth=1,x"], "depth")):
        code, _, err = run_cli([*args, *extra], capsys)
        assert code == 2 and says in err and "Traceback" not in err, (extra, err)
