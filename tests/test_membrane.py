"""Membrane diagnostics: hand-computed traces of IF (hard and soft reset) and LIF, the probe's life cycle,
skipped stateless layers, the files, and a whole (tiny) SDT."""

import csv
import math

import pytest
import timm
import torch
from torch import nn

import spikedriven  # noqa: F401  (registers the sdt model with timm)
from spikedriven import NeuronSpec, create_neuron
from spikedriven.analysis.membrane import HIST_BINS, MembraneRecorder, format_membrane, write_membrane
from spikedriven.engine.recorder import neuron_layers
from spikedriven.neurons import base as neuron_base

# Inputs [T = 3, N = 4], threshold 1; every value is exact in binary floating point.
X_IF = [[0.5, 1.25, -0.5, 0.9375],
        [0.5, 0.5, 0.25, 0.125],
        [0.25, 1.0, 3.5, -3.0]]

# IF, hard reset to 0:  H = V + X;  S = H >= 1;  V = 0 where S else H
IF_HARD = dict(
    H=[[0.5, 1.25, -0.5, 0.9375], [1.0, 0.5, -0.25, 1.0625], [0.25, 1.5, 3.25, -3.0]],
    S=[[0, 1, 0, 0], [1, 0, 0, 1], [0, 1, 1, 0]],
    V=[[0.5, 0.0, -0.5, 0.9375], [0.0, 0.5, -0.25, 0.0], [0.25, 0.0, 0.0, -3.0]],
)
# IF, soft reset:  V = H - S  (what a spike leaves behind: H - 1)
IF_SOFT = dict(
    H=[[0.5, 1.25, -0.5, 0.9375], [1.0, 0.75, -0.25, 1.0625], [0.25, 1.75, 3.25, -2.9375]],
    S=[[0, 1, 0, 0], [1, 0, 0, 1], [0, 1, 1, 0]],
    V=[[0.5, 0.25, -0.5, 0.9375], [0.0, 0.75, -0.25, 0.0625], [0.25, 0.75, 2.25, -2.9375]],
)
# LIF, tau 2, hard reset to 0:  H = V + (X - V) / 2, inputs chosen to give IF_HARD's H
X_LIF = [[1.0, 2.5, -1.0, 1.875],
         [1.5, 1.0, 0.0, 1.1875],
         [0.5, 2.5, 6.75, -6.0]]
LIF = IF_HARD

# the histogram bin [-2 + k/10, -2 + (k+1)/10) of each H above (None: below -2 or at/above 3)
BIN = {0.5: 25, 1.25: 32, -0.5: 15, 0.9375: 29, 1.0: 30, 1.0625: 30, -0.25: 17, 0.25: 22, 1.5: 35, 0.75: 27,
       1.75: 37, 3.25: "above", -3.0: "below", -2.9375: "below"}


def record(mode, x, **settings):
    layer = create_neuron(NeuronSpec(mode, **settings))
    x = torch.tensor(x)
    with MembraneRecorder(layer) as rec:
        spikes = layer(x)
    return layer, spikes, rec


def expected_step(trace, t):
    """The row's numbers for step t, from the hand-written trace (threshold 1)."""
    h, s, v = trace["H"][t], trace["S"][t], trace["V"][t]
    n = len(h)
    mean = sum(h) / n
    fired = [vi for vi, si in zip(v, s) if si]
    return dict(
        neuron_steps=n, h_mean=mean, h_std=math.sqrt(sum((x - mean) ** 2 for x in h) / n),
        near_threshold_fraction=sum(abs(x - 1.0) <= 0.1 for x in h) / n,
        v_after_reset_mean=sum(v) / n, v_after_fire_mean=sum(fired) / len(fired) if fired else None,
        firing_fraction=sum(s) / n, v_threshold=1.0,
    )


@pytest.mark.parametrize("mode,x,trace", [("if", X_IF, IF_HARD), ("if_soft", X_IF, IF_SOFT), ("lif", X_LIF, LIF)])
def test_hand_computed_rows(mode, x, trace):
    _, spikes, rec = record(mode, x)
    assert spikes.tolist() == trace["S"]
    rows = rec.rows()
    assert [(r["layer"], r["neuron"], r["step"]) for r in rows] == [("", mode, t) for t in range(3)]
    for t, row in enumerate(rows):
        for key, value in expected_step(trace, t).items():
            assert row[key] == pytest.approx(value, abs=1e-12) if value is not None else row[key] is None, (t, key)
        assert row["h_over_threshold_mean"] == pytest.approx(row["h_mean"])  # u_th = 1
    assert rec.skipped == {}


def test_hand_written_values():
    """A few of the numbers written out, besides the formulas above."""
    _, _, hard = record("if", X_IF)
    _, _, soft = record("if_soft", X_IF)
    h, s = hard.rows(), soft.rows()
    assert h[0]["h_mean"] == pytest.approx((0.5 + 1.25 - 0.5 + 0.9375) / 4)
    assert [r["near_threshold_fraction"] for r in h] == [0.25, 0.5, 0.0]  # 0.9375; 1.0 and 1.0625; none
    assert [r["firing_fraction"] for r in h] == [0.25, 0.5, 0.5]
    # hard reset: a spike leaves V_reset = 0; soft reset leaves H - u_th > 0
    assert [r["v_after_fire_mean"] for r in h] == [0.0, 0.0, 0.0]
    assert [r["v_after_fire_mean"] for r in s] == [0.25, 0.03125, 1.5]
    assert s[2]["v_after_reset_mean"] == pytest.approx((0.25 + 0.75 + 2.25 - 2.9375) / 4)


def test_nothing_fired_gives_none():
    _, _, rec = record("if", [[0.25, 0.5], [0.25, 0.0]])
    assert [r["v_after_fire_mean"] for r in rec.rows()] == [None, None]
    assert [r["firing_fraction"] for r in rec.rows()] == [0.0, 0.0]


@pytest.mark.parametrize("mode,trace", [("if", IF_HARD), ("if_soft", IF_SOFT)])
def test_histogram_counts(mode, trace):
    _, _, rec = record(mode, X_IF)
    hist = rec.histograms()[""]
    assert len(hist["edges"]) == HIST_BINS + 1
    assert hist["edges"][0] == -2.0 and hist["edges"][-1] == 3.0 and hist["edges"][30] == 1.0
    for t, h in enumerate(trace["H"]):
        counts = [0] * HIST_BINS
        below = above = 0
        for value in h:
            where = BIN[value]
            if where == "below":
                below += 1
            elif where == "above":
                above += 1
            else:
                counts[where] += 1
        assert hist["counts"][t] == counts, t
        assert hist["below"][t] == below and hist["above"][t] == above


def test_summary_pools_the_steps():
    _, _, rec = record("if_soft", X_IF)
    (row,) = rec.summary()
    every = [x for step in IF_SOFT["H"] for x in step]
    mean = sum(every) / 12
    assert row["steps"] == 3 and row["neuron_steps"] == 12
    assert row["h_mean"] == pytest.approx(mean)
    assert row["h_std"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in every) / 12))
    assert row["firing_fraction"] == pytest.approx(5 / 12)
    assert row["near_threshold_fraction"] == pytest.approx(3 / 12)
    assert row["v_after_fire_mean"] == pytest.approx((0.25 + 0.0 + 0.0625 + 0.75 + 2.25) / 5)  # over the 5 spikes


def test_batches_accumulate():
    layer = create_neuron(NeuronSpec("if"))
    x = torch.tensor(X_IF)
    with MembraneRecorder(layer) as rec:
        layer(x)
        layer(x)
    rows = rec.rows()
    assert [r["neuron_steps"] for r in rows] == [8, 8, 8]
    assert rows[1]["h_mean"] == pytest.approx(sum(IF_HARD["H"][1]) / 4)
    assert rec.histograms()[""]["counts"][1][30] == 4  # 1.0 and 1.0625, twice


def test_learnable_threshold():
    _, spikes, rec = record("if_learnable", X_IF)  # u_th = exp(ln 1) = 1, soft reset
    assert spikes.tolist() == IF_SOFT["S"]
    rows = rec.rows()
    assert isinstance(rows[0]["v_threshold"], float) and rows[0]["v_threshold"] == pytest.approx(1.0)
    assert [r["v_after_fire_mean"] for r in rows] == pytest.approx([0.25, 0.03125, 1.5])


def test_threshold_scales_the_histogram():
    x = [[v * 2 for v in step] for step in X_IF]
    _, _, rec = record("if", x, v_threshold=2.0)
    hist = rec.histograms()[""]
    assert hist["counts"][1][30] == 2  # H / u_th = 1.0 and 1.0625
    assert rec.rows()[1]["near_threshold_fraction"] == 0.5
    assert rec.rows()[1]["v_threshold"] == 2.0


def test_spikes_identical_with_and_without_recorder():
    model = timm.create_model("sdt", img_size=8, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2, time_steps=2,
                              spike_mode="lif")
    model.eval()
    x = torch.randn(3, 1, 8, 8) * 4
    with torch.no_grad():
        plain = model(x)
        with MembraneRecorder(model):
            recorded = model(x)
        after = model(x)
    assert torch.equal(plain, recorded) and torch.equal(plain, after)
    layer = create_neuron(NeuronSpec("if_soft"))
    x = torch.randn(4, 50) * 2
    free = layer(x)
    with MembraneRecorder(layer):
        assert torch.equal(layer(x), free)


def test_recorder_forces_the_loop(monkeypatch):
    """The fused kernels expose no H: with a probe attached, multi_step takes the loop even where they run."""
    monkeypatch.setattr(neuron_base, "fused_available", lambda x: True)

    def fused(*args, **kwargs):
        raise AssertionError("the fused path ran")

    monkeypatch.setattr(neuron_base, "fused_multi_step", fused)
    layer = create_neuron(NeuronSpec("if"))
    with MembraneRecorder(layer) as rec:
        layer(torch.tensor(X_IF))
    assert len(rec.rows()) == 3
    with pytest.raises(AssertionError, match="fused path ran"):
        layer(torch.tensor(X_IF))  # without the recorder, the fused path is back


def test_probe_removed_on_exit_and_on_exception():
    model = nn.Sequential(create_neuron(NeuronSpec("if")), create_neuron(NeuronSpec("lif")))
    with MembraneRecorder(model):
        assert all(m._membrane_probe is not None for m in model)
    assert all("_membrane_probe" not in m.__dict__ and m._membrane_probe is None for m in model)
    with pytest.raises(RuntimeError, match="boom"):
        with MembraneRecorder(model):
            model(torch.ones(2, 3))
            raise RuntimeError("boom")
    assert all("_membrane_probe" not in m.__dict__ for m in model)
    assert all(not m._forward_hooks for m in model)


def test_nested_recorders_both_record():
    layer = create_neuron(NeuronSpec("if"))
    with MembraneRecorder(layer) as outer:
        with MembraneRecorder(layer) as inner:
            layer(torch.tensor(X_IF))
        assert layer._membrane_probe is not None  # the outer one's, back again
    assert "_membrane_probe" not in layer.__dict__
    assert outer.rows() == inner.rows()


def test_multispike_layer_is_skipped():
    model = nn.Sequential(create_neuron(NeuronSpec("multispike")), create_neuron(NeuronSpec("if")))
    with MembraneRecorder(model) as rec:
        model(torch.rand(2, 5) * 3)
    assert list(rec.skipped) == ["0"]
    assert "multispike" in rec.skipped["0"] and "membrane" in rec.skipped["0"]
    assert {r["layer"] for r in rec.rows()} == {"1"}
    text = format_membrane(rec.summary(), rec.skipped)
    assert "skipped 0:" in text


def test_layer_not_run_is_skipped():
    model = nn.ModuleDict({"a": create_neuron(NeuronSpec("if")), "b": create_neuron(NeuronSpec("if"))})
    with MembraneRecorder(model) as rec:
        model["a"](torch.tensor(X_IF))
    assert list(rec.skipped) == ["b"] and "did not run" in rec.skipped["b"]


def test_files_are_written_and_parseable(tmp_path):
    model = nn.ModuleList([create_neuron(NeuronSpec(mode)) for mode in ("if", "if_soft", "multispike")])
    with MembraneRecorder(model) as rec:
        for layer in model:  # side by side: each sees X_IF
            layer(torch.tensor(X_IF))
    files = write_membrane(tmp_path, rec)
    assert set(files) == {"csv", "hist_csv", "png"}
    assert all(p.parent == tmp_path for p in files.values())
    with open(files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["layer"], r["step"]) for r in rows] == [(layer, str(t)) for layer in ("0", "1") for t in range(3)]
    assert float(rows[3]["v_after_fire_mean"]) == 0.25  # if_soft, t = 0
    assert rows[0]["v_after_fire_mean"] == "0.0"
    with open(files["hist_csv"], newline="") as f:
        hist = list(csv.DictReader(f))
    assert len(hist) == 2 * 3 * (HIST_BINS + 2)
    for layer in ("0", "1"):
        for t in range(3):
            mine = [r for r in hist if r["layer"] == layer and r["step"] == str(t)]
            assert sum(int(r["count"]) for r in mine) == 4
            assert float(mine[0]["bin_low"]) == -math.inf and float(mine[-1]["bin_high"]) == math.inf
            lows = [float(r["bin_low"]) for r in mine]
            assert lows == sorted(lows)
    above = [r for r in hist if r["layer"] == "1" and r["step"] == "2" and r["bin_high"] == "inf"]
    assert int(above[0]["count"]) == 1  # H = 3.25
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_recorder_files(tmp_path):
    rec = MembraneRecorder(nn.Sequential(create_neuron(NeuronSpec("multispike"))))
    files = write_membrane(tmp_path, rec)
    assert files["csv"].read_text().startswith("layer,neuron,step")
    assert files["png"].stat().st_size > 0
    assert "no neuron layer recorded" in format_membrane(rec.summary(), rec.skipped)


def test_tiny_sdt_covers_every_stateful_layer():
    model = timm.create_model("sdt", img_size=8, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2, time_steps=2,
                              spike_mode="if_soft")
    model.eval()
    with torch.no_grad(), MembraneRecorder(model) as rec:
        model(torch.randn(2, 1, 8, 8))
    names = list(neuron_layers(model))
    summary = rec.summary()
    assert [r["layer"] for r in summary] == names
    assert rec.skipped == {}
    assert all(r["steps"] == 2 and r["neuron"] == "if_soft" for r in summary)
    assert {(r["layer"], r["step"]) for r in rec.rows()} == {(n, t) for n in names for t in range(2)}
    assert list(rec.histograms()) == names
    text = format_membrane(summary, rec.skipped)
    assert all(name in text for name in names)
    for word in ("mean H/u_th", "within 10% of u_th", "V after reset", "V left after a spike", "firing fraction"):
        assert word in text


def test_tiny_sdt_multispike_is_all_skipped():
    model = timm.create_model("sdt", img_size=8, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2, time_steps=2,
                              spike_mode="multispike")
    with torch.no_grad(), MembraneRecorder(model.eval()) as rec:
        model(torch.randn(2, 1, 8, 8))
    assert list(rec.skipped) == list(neuron_layers(model)) and rec.rows() == []
