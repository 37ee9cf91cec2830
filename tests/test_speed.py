"""Inference speed: what is measured and how (never how fast: timings depend on the machine)."""

import math

import pytest
import timm
import torch

import spikedriven  # noqa: F401  (registers the sdt model with timm)
from spikedriven import ConfigError
from spikedriven.analysis import speed as speed_mod
from spikedriven.analysis.speed import ROW_KEYS, format_speed, measure_speed
from spikedriven.engine.recorder import neuron_layers
from spikedriven.neurons import SpikingNeuron, neuron_path, set_neuron_path


def tiny(mode="if_soft", time_steps=2):
    return timm.create_model("sdt", img_size=8, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2, time_steps=time_steps,
                             spike_mode=mode)


def example(b=3):
    return torch.randn(b, 1, 8, 8)


def count_loops(monkeypatch):
    """Wrap ``SpikingNeuron.loop``: every call is recorded with the layer's path at that moment."""
    calls = []
    original = SpikingNeuron.loop

    def loop(self, x):
        calls.append(self.neuron_path)
        return original(self, x)

    monkeypatch.setattr(SpikingNeuron, "loop", loop)
    return calls


def own_settings(model):
    return {name: m.neuron_path for name, m in neuron_layers(model).items()}


def test_rows_fields_and_types():
    rows = measure_speed(tiny(), example(3), "cpu", warmup=1, repeats=2)
    assert [(r["path"], r["batch"]) for r in rows] == [("fused", 1), ("fused", 3), ("loop", 1), ("loop", 3)]
    for r in rows:
        assert tuple(r) == ROW_KEYS  # the same keys in the same order: speed.csv takes the first row's
        assert r["device"] == "cpu" and r["dtype"] == "float32"
        assert isinstance(r["available"], bool) and isinstance(r["note"], str)
        assert r["repeats"] == 2 and r["warmup"] == 1
    for r in rows[2:]:
        assert r["available"] and r["note"] == ""
        for key in ("images_per_s", "latency_ms", "latency_ms_min", "latency_ms_max"):
            assert isinstance(r[key], float) and r[key] > 0 and math.isfinite(r[key])
        assert r["latency_ms_min"] <= r["latency_ms"] <= r["latency_ms_max"]
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["latency_ms"] / 1e3))


def test_amp_dtype_is_named():
    rows = measure_speed(tiny(), example(2), "cpu", amp_dtype=torch.bfloat16, paths=("loop",), batch_sizes=(2,),
                         warmup=0, repeats=1)
    assert rows[0]["dtype"] == "bfloat16" and rows[0]["available"]


def test_batch_sizes_slice_and_tile_the_example():
    model, seen = tiny(), []
    model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].shape[0]))
    rows = measure_speed(model, example(3), "cpu", batch_sizes=(1, 3, 5, 3), paths=("loop",), warmup=1, repeats=2)
    assert [r["batch"] for r in rows] == [1, 3, 5]  # deduplicated, in order
    assert seen == [1] * 3 + [3] * 3 + [5] * 3  # warm-up and timed forwards at each size


def test_default_batch_sizes_deduplicate():
    rows = measure_speed(tiny(), example(1), "cpu", paths=("loop",), warmup=0, repeats=1)
    assert [r["batch"] for r in rows] == [1]


def test_tiled_batch_repeats_the_images():
    x = example(2)
    big = speed_mod._batch(x, 5)
    assert big.shape[0] == 5
    assert torch.equal(big[:2], x) and torch.equal(big[2:4], x) and torch.equal(big[4], x[0])


def test_loop_path_runs_the_loop_and_restores_each_layers_path(monkeypatch):
    model = tiny()
    layers = neuron_layers(model)
    first = next(iter(layers.values()))
    set_neuron_path(model, "loop")
    set_neuron_path(first, "fused")  # one layer's own setting, to come back as its own
    before = own_settings(model)
    assert list(before.values())[:2] == ["fused", "loop"]
    calls = count_loops(monkeypatch)
    measure_speed(model, example(2), "cpu", batch_sizes=(1, 2), paths=("loop",), warmup=2, repeats=3)
    # every stateful layer loops once per forward: (2 warm-up + 3 timed) forwards at each of 2 batch sizes
    assert len(calls) == len(layers) * 5 * 2
    assert set(calls) == {"loop"}  # every layer looped while measuring
    assert own_settings(model) == before


def test_neuron_paths_restored_after_an_exception(monkeypatch):
    model = tiny()
    set_neuron_path(next(iter(neuron_layers(model).values())), "loop")
    before = own_settings(model)

    def broken(self, x):
        raise RuntimeError("neuron failed")

    monkeypatch.setattr(SpikingNeuron, "loop", broken)
    model.train()
    with pytest.raises(RuntimeError, match="neuron failed"):
        measure_speed(model, example(2), "cpu", paths=("loop",), warmup=1, repeats=1)
    assert own_settings(model) == before
    assert all(m.training for m in model.modules())

    with pytest.raises(KeyError):
        with neuron_path(model, "fused"):
            assert all(m.neuron_path == "fused" for m in neuron_layers(model).values())
            raise KeyError("inside")
    assert own_settings(model) == before


def test_training_mode_restored_per_module():
    model = tiny()
    model.train()
    model.head.eval()  # a frozen part stays as it was
    measure_speed(model, example(2), "cpu", paths=("loop",), batch_sizes=(1,), warmup=0, repeats=1)
    assert model.training and not model.head.training
    assert model.patch_embed.proj_bn.training


def test_model_is_measured_in_eval_mode(monkeypatch):
    model, modes = tiny(), []
    model.register_forward_pre_hook(lambda m, inputs: modes.append(m.training))
    model.train()
    measure_speed(model, example(2), "cpu", paths=("loop",), batch_sizes=(2,), warmup=1, repeats=1)
    assert modes == [False, False]


def test_fused_unavailable_on_cpu(monkeypatch):
    monkeypatch.setattr(speed_mod, "fused_available", lambda x: False)  # as on CPU, even under TRITON_INTERPRET
    model, seen = tiny(), []
    model.register_forward_pre_hook(lambda m, inputs: seen.append(1))
    rows = measure_speed(model, example(2), "cpu", paths=("fused",), warmup=2, repeats=2)
    assert len(rows) == 2 and not seen  # no time spent on it
    for r in rows:
        assert r["available"] is False
        assert "CUDA" in r["note"] and "loop" in r["note"]
        assert all(r[k] is None for k in ("images_per_s", "latency_ms", "latency_ms_min", "latency_ms_max"))


def test_fused_path_sets_the_fused_path_where_available(monkeypatch):
    monkeypatch.setattr(speed_mod, "fused_available", lambda x: True)  # the speed module believes it can run
    model = tiny()
    calls = count_loops(monkeypatch)  # on CPU the neurons themselves still fall back to the loop
    rows = measure_speed(model, example(2), "cpu", paths=("fused",), batch_sizes=(2,), warmup=1, repeats=1)
    assert rows[0]["available"] and rows[0]["note"] == ""
    assert calls and set(calls) == {"fused"}


def test_no_fused_form_is_said():
    rows = measure_speed(tiny("multispike"), example(2), "cpu", batch_sizes=(1,), warmup=0, repeats=1)
    fused, loop = rows
    assert not fused["available"] and fused["note"] == "no neuron of this model has a fused form"
    assert loop["available"]


def test_bad_inputs():
    model = tiny()
    with pytest.raises(ConfigError, match="unknown speed path"):
        measure_speed(model, example(), "cpu", paths=("gpu",))
    with pytest.raises(ConfigError, match="repeats"):
        measure_speed(model, example(), "cpu", repeats=0)
    with pytest.raises(ConfigError, match="warmup"):
        measure_speed(model, example(), "cpu", warmup=-1)
    with pytest.raises(ConfigError, match="batch sizes"):
        measure_speed(model, example(), "cpu", batch_sizes=(0,))
    with pytest.raises(ConfigError, match="batch of images"):
        measure_speed(model, torch.empty(0, 1, 8, 8), "cpu")
    with pytest.raises(ConfigError, match="move it there"):
        measure_speed(model, example(), "meta")
    with pytest.raises(ValueError, match="unknown neuron path 'jit'; valid neuron paths are: fused, loop"):
        with neuron_path(model, "jit"):
            pass
    assert set(own_settings(model).values()) == {"fused"}


def test_format_speed():
    rows = measure_speed(tiny(), example(2), "cpu", batch_sizes=(1, 2), warmup=1, repeats=2)
    text = format_speed(rows)
    lines = text.splitlines()
    assert "median of 2 timed forwards after 1 warm-up" in lines[0]
    assert len(lines) == 2 + len(rows)
    header = lines[1]
    for word in ("path", "batch", "images/s", "latency ms median [min-max]", "device", "dtype", "note"):
        assert word in header
    # aligned: every row's device column starts where the header's does
    col = header.index("device")
    assert all(line[col:].startswith("cpu") for line in lines[2:])
    assert "fused" in lines[2] and " - " in lines[2]  # unavailable: no numbers
    assert format_speed([]).startswith("inference speed")
