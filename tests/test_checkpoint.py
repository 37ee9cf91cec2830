"""Checkpoints: the original code's layout, our own format, and bad files."""

import argparse

import pytest
import torch

from spikedriven import CheckpointError, load_checkpoint, save_checkpoint
from spikedriven.models import SpikeDrivenTransformer

from conftest import tiny_model_kwargs


def original_style_checkpoint(model, path, ddp=True, ema=False):
    """A checkpoint in the original code's layout: dead talking-heads weights, Namespace args."""
    state = {}
    for key, value in model.state_dict().items():
        state[("module." if ddp else "") + key] = value.clone()
    for i in range(len(model.block)):
        state[("module." if ddp else "") + f"block.{i}.attn.talking_heads.weight"] = torch.randn(8, 8, 1)
    ckpt = {
        "epoch": 299,
        "arch": "sdt",
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
        "version": 2,
        "args": argparse.Namespace(spike_mode=model.neuron_spec.mode, dim=model.embed_dim, layer=len(model.block),
                                   time_steps=model.T, num_classes=model.num_classes, TET=False),
        "metric": 94.53,
    }
    if ema:
        ckpt["state_dict_ema"] = {k: v + 1 for k, v in model.state_dict().items() if v.is_floating_point()} | {
            k: v for k, v in model.state_dict().items() if not v.is_floating_point()
        }
    torch.save(ckpt, path)  # plain pickle, as the original wrote it
    return ckpt


@pytest.mark.parametrize("ddp", [True, False])
def test_original_checkpoint_loads_strictly_and_reproduces_outputs(tmp_path, ddp):
    src = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="if_soft"))
    src(torch.randn(8, 3, 16, 16))  # move BN running stats away from init
    src.eval()
    path = tmp_path / "model_best.pth.tar"
    original_style_checkpoint(src, path, ddp=ddp)

    dst = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="if_soft")).eval()
    ckpt = load_checkpoint(dst, path)
    assert ckpt["epoch"] == 299 and vars(ckpt["args"])["spike_mode"] == "if_soft"
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(dst(x), src(x))


def test_original_ema_weights(tmp_path):
    src = SpikeDrivenTransformer(**tiny_model_kwargs())
    path = tmp_path / "ema.pth.tar"
    ckpt = original_style_checkpoint(src, path, ddp=False, ema=True)
    dst = SpikeDrivenTransformer(**tiny_model_kwargs())
    load_checkpoint(dst, path, use_ema=True)
    assert torch.equal(dst.head.weight, ckpt["state_dict_ema"]["head.weight"])


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    src = SpikeDrivenTransformer(**tiny_model_kwargs(num_classes=100))
    state = src.state_dict()
    del state["block.0.mlp.fc1_conv.bias"]
    state["block.0.attn.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(SpikeDrivenTransformer(**tiny_model_kwargs()), path)
    msg = str(info.value)
    assert "missing keys: block.0.mlp.fc1_conv.bias" in msg
    assert "unexpected keys: block.0.attn.extra.weight" in msg
    assert "head.weight (100, 32) vs model (10, 32)" in msg


def test_arbitrary_objects_are_not_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="not on the allow-list"):
        load_checkpoint(SpikeDrivenTransformer(**tiny_model_kwargs()), path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_files_are_clean_errors(tmp_path, content):
    path = tmp_path / "junk.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.pth.tar"):
        load_checkpoint(SpikeDrivenTransformer(**tiny_model_kwargs()), path)


def test_truncated_checkpoint_is_a_clean_error(tmp_path):
    model = SpikeDrivenTransformer(**tiny_model_kwargs())
    path = save_checkpoint(tmp_path / "last.pth.tar", {"state_dict": model.state_dict()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated or damaged"):
        load_checkpoint(model, path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(SpikeDrivenTransformer(**tiny_model_kwargs()), tmp_path / "nope.pth.tar")


def test_own_checkpoint_round_trip_is_atomic(tmp_path):
    model = SpikeDrivenTransformer(**tiny_model_kwargs())
    path = save_checkpoint(tmp_path / "run" / "last.pth.tar", {"state_dict": model.state_dict(), "epoch": 3})
    assert [p.name for p in path.parent.iterdir()] == ["last.pth.tar"]  # no temp files left
    other = SpikeDrivenTransformer(**tiny_model_kwargs())
    ckpt = load_checkpoint(other, path)
    assert ckpt["format"] == "spikedriven" and ckpt["format_version"] == 1 and ckpt["epoch"] == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
