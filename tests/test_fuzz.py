"""Fuzzing: random and mutated configs and checkpoints fail only with clean, user-facing errors."""

import io
import random
import string

import pytest
import torch
import yaml

from spikedriven import SpikedrivenError, load_checkpoint, save_checkpoint
from spikedriven.config import FIELDS, Config, load_config
from spikedriven.models import SpikeDrivenTransformer

from helpers import tiny_model_kwargs

VALUES = [None, True, False, 0, 1, -1, 7, 0.5, -0.3, 1e308, float("nan"), "", "none", "lif", "if_soft", "3e-4",
          "0011", "x" * 50, [], [1], [0.5, 0.5, 0.5], [1, "a"], {"a": 1}, "true", "0", 2**70]


def random_yaml_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:  # random characters, often not YAML at all
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 200)))
    if kind < 0.5:  # a real config with one line mangled
        lines = yaml.safe_dump(Config().to_dict()).splitlines()
        i = rng.randrange(len(lines))
        cut = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:cut] + rng.choice([":", "[", "{", "- ", "\t", "'", "&a", "*b", "!!python/object:os.system"]) + lines[i][cut:]
        return "\n".join(lines)
    data = {}
    defaults = Config().to_dict()
    for _ in range(rng.randint(1, 6)):  # mostly valid keys with arbitrary values, or their own default
        key = rng.choice(list(FIELDS)) if rng.random() < 0.85 else rng.choice(["dimm", "model-ema", "", "1", "TET"])
        data[key] = defaults[key] if key in defaults and rng.random() < 0.3 else rng.choice(VALUES)
    return yaml.safe_dump(data, allow_unicode=True) if rng.random() < 0.9 else repr(data)


def test_random_and_mutated_configs(tmp_path):
    rng = random.Random(2026)
    path = tmp_path / "fuzz.yml"
    outcomes = {"valid": 0, "refused": 0}
    for _ in range(400):
        path.write_text(random_yaml_text(rng))
        try:
            cfg = load_config(path)
        except SpikedrivenError as e:
            assert str(e) and "\n" not in str(e)
            outcomes["refused"] += 1
        else:
            assert isinstance(cfg, Config)
            outcomes["valid"] += 1
    assert outcomes["refused"] > 100 and outcomes["valid"] > 10, outcomes


@pytest.fixture(scope="module")
def real_checkpoint_bytes(tmp_path_factory):
    model = SpikeDrivenTransformer(**tiny_model_kwargs(depth=1, embed_dim=16, num_heads=2))
    path = save_checkpoint(tmp_path_factory.mktemp("ck") / "last.pth.tar", {"state_dict": model.state_dict(), "epoch": 1})
    return path.read_bytes()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    choice = rng.random()
    if choice < 0.4:
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice < 0.7:
        data = data[: rng.randrange(len(data))]
    else:
        start = rng.randrange(len(data))
        data[start:start + rng.randint(1, 400)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    return bytes(data)


def test_random_and_mutated_checkpoints(tmp_path, real_checkpoint_bytes):
    rng = random.Random(7)
    model = SpikeDrivenTransformer(**tiny_model_kwargs(depth=1, embed_dim=16, num_heads=2))
    path = tmp_path / "fuzz.pth.tar"
    loaded = refused = 0
    for i in range(300):
        if i % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
        else:
            data = _mutate(real_checkpoint_bytes, rng)
        path.write_bytes(data)
        try:
            load_checkpoint(model, path)
        except SpikedrivenError as e:
            assert str(e) and "fuzz.pth.tar" in str(e)
            refused += 1
        else:
            loaded += 1  # a mutation that missed every byte that matters
    assert refused > 200


@pytest.mark.parametrize("payload", [
    [1, 2, 3], {"state_dict": [1, 2]}, {"state_dict": {"head.weight": "abc"}}, {"state_dict": {1: torch.zeros(1)}},
    {"state_dict": {}}, {"state_dict_ema": {}}, "text",
])
def test_well_formed_files_that_are_not_our_checkpoints(tmp_path, payload):
    path = tmp_path / "odd.pth.tar"
    buf = io.BytesIO()
    torch.save(payload, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(SpikedrivenError):
        load_checkpoint(SpikeDrivenTransformer(**tiny_model_kwargs()), path)
