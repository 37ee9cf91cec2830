"""Shared test helpers: tiny models and runs, the demo config, the command line, file readers."""

import argparse
import csv
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "conf/digits/demo.yml")  # real data (scikit-learn's digits), no download
# the demo at a size that trains an epoch in seconds on a CPU
SMALL = ["--epochs", "1", "--warmup-epochs", "0", "--cooldown-epochs", "0", "--embed-dim", "16", "--num-heads", "2",
         "--workers", "0", "--device", "cpu"]

TINY_RUN = [
    "--embed-dim", "32", "--depth", "1", "--time-steps", "2", "--epochs", "2", "--warmup-epochs", "1",
    "--cooldown-epochs", "0", "--batch-size", "8", "--val-batch-size", "16", "--workers", "0",
    "--device", "cpu", "--log-interval", "2",
]


def read_summary(run_dir: Path) -> list[dict]:
    with open(Path(run_dir) / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def deterministic_columns(rows: list[dict]) -> list[dict]:
    """Summary rows without the wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in ("train_seconds", "epoch_seconds", "images_per_s")} for r in rows]


def assert_same_run(a, b) -> None:
    """Two run folders hold the same run: summary rows (but wall-clock) and final weights bit for bit."""
    import torch

    from spikedriven.engine.checkpoint import read_checkpoint

    assert deterministic_columns(read_summary(a)) == deterministic_columns(read_summary(b))
    sa, sb = (read_checkpoint(Path(r) / "last.pth.tar")["state_dict"] for r in (a, b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def stop_after_steps(monkeypatch, steps: int) -> dict:
    """Make the run's stop flag read as set once ``steps`` training steps have run (as if Ctrl-C came then);
    a single process acts on it after that step."""
    from spikedriven.engine import loop
    from spikedriven.engine import trainer

    calls = {"n": 0}
    original = loop.classification_loss

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "classification_loss", counting)
    monkeypatch.setattr(trainer.StopFlag, "__call__", lambda self: calls["n"] >= steps)
    return calls


def read_wandb_offline(run_dir: Path) -> list[dict]:
    """The records of every offline W&B run under ``run_dir/wandb``, oldest first:
    ``{"id", "config", "history": [{key: value}], "summary": {key: value}}``.

    wandb (0.31) ships no Python reader for its ``.wandb`` files, so this reads their framing here:
    a 7-byte file header, then 32 KiB blocks of records, each a 7-byte header (crc32, length, type)
    and a piece of one protobuf ``Record`` (type 1: whole; 2, 3, 4: first, middle, last piece)."""
    import json
    import struct

    import wandb
    from wandb.proto import wandb_internal_pb2

    # run.finish() returns once the run has ended, but W&B's service process writes the .wandb file through
    # a buffer that it flushes when it closes the run's stream, which may come later on a loaded machine (a
    # CI run once found no run record in the file). Shutting the service down closes every stream; a real
    # run gets the same at the exit of its process.
    wandb.teardown()
    runs = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, piece, records = path.read_bytes(), 7, b"", []
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if length == 0 and kind == 0:
                break
            piece += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(piece)
                records.append(record)
                piece = b""
        assert records, f"{path} holds no W&B records ({len(data)} bytes)"
        run = {"id": None, "config": {}, "history": [], "summary": {}}
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["id"] = record.run.run_id
                run["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                run["history"].append({k: v for k, v in row.items() if not k.startswith("_")})
            elif kind == "summary":
                run["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
        runs.append(run)
    return runs


def tiny_model_kwargs(**overrides):
    """A small SDT that runs in milliseconds on CPU."""
    kwargs = dict(num_classes=10, img_size=16, in_chans=3, embed_dim=32, depth=1, num_heads=4, mlp_ratio=2, time_steps=2)
    kwargs.update(overrides)
    return kwargs


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
                                   time_steps=model.time_steps, num_classes=model.num_classes, TET=False),
        "metric": 94.53,
    }
    if ema:
        ckpt["state_dict_ema"] = {k: v + 1 for k, v in model.state_dict().items() if v.is_floating_point()} | {
            k: v for k, v in model.state_dict().items() if not v.is_floating_point()
        }
    torch.save(ckpt, path)  # plain pickle, as the original wrote it
    return ckpt


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``spikedriven ARGS`` in this process: its exit code, stdout and stderr."""
    from spikedriven.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_same_state(a, b) -> None:
    """Two modules' state dicts: the same keys, every tensor equal (the key and largest difference if not)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), (k, (sa[k].float() - sb[k].float()).abs().max().item())


def mae_style_checkpoint(state_dict, path, **args):
    """A checkpoint as SDT-V2's and -V3's ``misc.save_model`` writes it: the unwrapped state dict under 'model',
    the optimizer, epoch and scaler beside it, the command line as an argparse Namespace under 'args'."""
    import argparse

    torch.save({"model": state_dict, "optimizer": {}, "epoch": 3, "scaler": {}, "args": argparse.Namespace(**args)},
               path)
    return path


def assert_metaformer_init(model, heads, convs: int) -> None:
    """SDT-V2's and -V3's initialisation: the heads from a normal of std 0.02 (cut at the absolute +-2: in effect
    untruncated), biases 0; every one of the ``convs`` convolutions PyTorch's kaiming-uniform, weight and bias in
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)); batch norms weight 1, bias 0, statistics 0 and 1."""
    from torch import nn

    for head in heads:
        assert abs(head.weight.std().item() - 0.02) < 0.002
        assert 0.04 < head.weight.abs().max() < 2
        assert torch.equal(head.bias, torch.zeros_like(head.bias))
    found = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert len(found) == convs
    for conv in found:
        bound = 1 / (conv.weight[0].numel()) ** 0.5
        assert conv.weight.abs().max() <= bound
        if conv.weight.numel() >= 2000:
            assert abs(conv.weight.std().item() / (bound / 3 ** 0.5) - 1) < 0.1
        if conv.bias is not None:
            assert conv.bias.abs().max() <= bound and conv.bias.abs().max() > bound / 10
    for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
