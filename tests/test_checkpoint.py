"""Checkpoints: the original code's layout, our own format, and bad files."""


import pytest
import torch

from spikedriven import CheckpointError, load_checkpoint, save_checkpoint
from spikedriven.models import SpikeDrivenTransformer

from helpers import original_style_checkpoint, tiny_model_kwargs


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
