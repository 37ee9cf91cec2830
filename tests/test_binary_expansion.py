"""Multi-level spikes run as binary ones (``spike_ops.binary_expansion``), and the energy models' expanded view
of them (``analysis.operations.expanded_counts``): the same logits, and counts and energies by hand."""

import json

import pytest
import timm
import torch
from torch import nn

import spikedriven  # noqa: F401  (registers the models with timm)
from spikedriven import create_neuron
from spikedriven.analysis import analyze, resolve_energy_models
from spikedriven.analysis.evaluation import print_report
from spikedriven.analysis.operations import OperationCounter, counts_per_image, expanded_counts
from spikedriven.analysis.reports import write_evaluation
from spikedriven.engine.recorder import SpikeRecorder
from spikedriven.models import SpikeDrivenTransformer
from spikedriven.spike_ops import (ATTENTION_ORDERS, SpikeConv2d, SpikeLinear, SpikeMaxPool2d, attention_products,
                                   binary_expansion, spike_attention, spike_mul)
from spikedriven.spike_ops.expansion import watch_products

from helpers import tiny_model_kwargs

ALL_MODELS = ("sdt", "neuron", "lemaire")


def lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms that let a fresh model fire at every level (at its initial weights it barely fires)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.num_features, generator=generator) * 3 + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=generator) * 2 - 0.5)
    return model.eval()


def images(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2


def level_spikes(shape, levels: int, seed: int) -> torch.Tensor:
    return torch.randint(0, levels + 1, shape, generator=torch.Generator().manual_seed(seed)) / levels


# ------------------------------------------------------------------ the expanded forward


@pytest.mark.parametrize("levels", [4, 2])
def test_the_expanded_forward_gives_the_integer_logits_from_binary_inputs_only(levels, monkeypatch):
    torch.manual_seed(0)
    model = lively(SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="multispike", levels=levels)))
    x = images()
    with torch.no_grad():
        integer = model(x)
    seen = []  # every input a convolution or linear layer computes on, under the expansion

    def spy(fn):
        def call(inputs, *args, **kwargs):
            seen.append(set(inputs.unique().tolist()) <= {0.0, 1.0})
            return fn(inputs, *args, **kwargs)
        return call

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy(torch.nn.functional.conv2d))
    monkeypatch.setattr(torch.nn.functional, "linear", spy(torch.nn.functional.linear))
    with torch.no_grad(), binary_expansion(model):
        expanded = model(x)
    monkeypatch.undo()
    assert integer.abs().max() > 0.1 and torch.allclose(expanded, integer, rtol=1e-5, atol=1e-6)
    # the image's convolution on real values once; ten layers fed by level-D spikes and the attention's
    # output convolution (q x kv: D^2 levels) once per binary frame
    assert seen.count(False) == 1 and seen.count(True) == 10 * levels + levels ** 2
    with torch.no_grad():
        assert torch.equal(model(x), integer)  # the block's end restores the integer forward


@pytest.mark.parametrize("name", ["spikformer_cifar", "spikformer"])
def test_spikformer_expands_its_attention_and_its_stream_fed_layers(name):
    torch.manual_seed(0)
    model = lively(timm.create_model(name, num_classes=10, img_size=16, embed_dim=16, num_heads=2, depth=1,
                                     time_steps=2, spike_mode="multispike"))
    with torch.no_grad():
        integer = model(images(2))
        with binary_expansion(model):
            expanded = model(images(2))
    assert torch.allclose(expanded, integer, rtol=1e-5, atol=1e-6)


class _Products(nn.Module):
    def __init__(self, order: str):
        super().__init__()
        self.order = order

    def forward(self, q, k, v):
        return spike_mul(q, k, 4), spike_attention(q, k, v, 0.125, self.order, 4)


@pytest.mark.parametrize("order", ATTENTION_ORDERS)
def test_products_of_level_spikes_expand_exactly_and_are_reported(order):
    q, k, v = (level_spikes((2, 3, 5, 4), 4, seed) for seed in (0, 1, 2))  # [groups..., N = 5, d = 4]
    module = _Products(order)
    with torch.no_grad(), binary_expansion(module), watch_products(module) as tally:
        product, attention = module(q, k, v)
    assert torch.equal(product, q * k) and torch.equal(attention, attention_products(q, k, v, 0.125, order))
    # dense: q * k, 2 x 3 x 5 x 4 products; the attention over 6 heads, N = 5, d = 4
    spike, mixed = (4 * 4 * 5, 5 * 4 * 4) if order == "q_kv" else (5 * 5 * 4, 5 * 5 * 4)
    assert tally.spike == {(4, 4): 120 + 6 * spike} and tally.mixed == {4: 6 * mixed}


def test_the_expansion_refuses_gradients_and_values_that_are_not_spikes():
    layer = SpikeLinear(2, 1, levels=4)
    with binary_expansion(layer), pytest.raises(RuntimeError, match="inference only: call the model under"):
        layer(torch.tensor([[0.25, 0.5]]))
    with torch.no_grad(), binary_expansion(layer), pytest.raises(ValueError, match="not spikes k / 4"):
        layer(torch.tensor([[0.3, 0.5]]))


# ------------------------------------------------------------------ the expanded counts, by hand

T = 2


class _Mask(nn.Module):
    """The product of the two channels of level-4 spikes; declares it as the integer view counts it."""

    def forward(self, s):
        return spike_mul(s[:, :, :1], s[:, :, 1:], 4)

    def inference_ops(self, inputs, output):
        return {"mul": output.numel()}


class HandNet(nn.Module):
    """x [1, 1, 2, 2] over T = 2 steps -> multispike (4 levels) -> 1x1 SpikeConv2d to 2 channels, with bias ->
    multispike -> the product of its two channels (16 levels) -> 2x2 max-pool -> SpikeLinear(1, 2), with bias."""

    spike_levels = 4

    def __init__(self):
        super().__init__()
        self.n1 = create_neuron({"mode": "multispike", "levels": 4})
        self.conv = SpikeConv2d(1, 2, 1, bias=True, levels=4)
        self.n2 = create_neuron({"mode": "multispike", "levels": 4})
        self.mask = _Mask()
        self.pool = SpikeMaxPool2d(2, levels=16)
        self.head = SpikeLinear(1, 2, levels=16)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([3.0, 1.2]).reshape(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.2, 0.0]))
            self.head.weight.copy_(torch.tensor([[1.0], [2.0]]))
            self.head.bias.copy_(torch.tensor([0.5, -0.5]))

    def forward(self, x):
        b = x.shape[0]
        s1 = self.n1(x.unsqueeze(0).expand(T, *x.shape))  # [T, B, 1, 2, 2]
        s2 = self.n2(self.conv(s1.flatten(0, 1)).reshape(T, b, 2, 2, 2))
        pooled = self.pool(self.mask(s2).flatten(0, 1)).reshape(T, b, 1)
        return self.head(pooled).mean(0)


X = torch.tensor([[[[0.5, 1.6], [3.7, -1.0]]]])
# By hand, at both steps:
#   n1: round(clamp(X, 0, 4)) = k1 = (1, 2 | 4, 0): 7 events of 4 inputs; binary frames [k1 >= j], j = 1..4,
#       hold 3, 2, 1, 1 events
#   conv (1 MAC per output, 8 outputs): channel 0 = 3 k1 / 4 + 0.2 = (0.95, 1.7 | 3.2, 0.2) -> k2 = (1, 2 | 3, 0);
#       channel 1 = 1.2 k1 / 4 = (0.3, 0.6 | 1.2, 0) -> (0, 1 | 1, 0): n2 emits 8 events of 8 neurons
#   mask: (1 x 0, 2 x 1 | 3 x 1, 0 x 0) / 16, 4 products; pool: max 3 / 16, 3 compares; head: 3 events, 2 MACs
# Integer view per image (T = 2): conv 14 events, 8 x 14 / 4 = 28 SOPs; head 6 events, 2 x 6 = 12 SOPs;
#   neuron steps n1 4 x 2 = 8, n2 8 x 2 = 16; bias adds 16 (conv) + 4 (head); 8 "mul"; 6 "compare".
# Expanded view: conv T x 4 = 8 binary sub-steps, head T x 16 = 32, the same events and SOPs; n1 8 x 4 = 32
#   and n2 16 x 4 = 64 binary sub-steps, plus their 8 and 16 steps' once-a-step work; the 8 products of two
#   level-4 spikes 8 x 16 = 128 ANDs; the 6 compares over level-16 spikes 6 x 16 = 96 ORs.
SDT_PJ = 0.9 * (28 + 12)  # 36: the same in both views
MULTISPIKE_STEP_PJ = 0.9 + 3.7 + 2 * 0.9 + 2 * 0.9  # its declared ops: 1 add, 1 mul, 2 compares, 2 selects
NEURON_PJ = SDT_PJ + 24 * MULTISPIKE_STEP_PJ + 20 * 0.9 + 8 * 3.7 + 6 * 0.9  # 285.8
SUB_STEP_PJ, ONCE_PJ = 0.9 + 0.9, 0.9 + 2 * 0.9 + 2 * 0.9  # binary_ops: compare, subtract | add, clamp
NEURON_EXPANDED_PJ = SDT_PJ + 96 * SUB_STEP_PJ + 24 * ONCE_PJ + 20 * 0.9 + 128 * 0.03 + 96 * 0.03  # 341.52
# Memory: 15 pJ per SOP, 5.1 per input event, 5.1 per output spike; a binary sub-step reads and writes its state
MEMORY_PJ = (28 + 12) * 15 + (14 + 6) * 5.1 + (14 + 16) * 5.1  # 855
LEMAIRE_PJ, LEMAIRE_EXPANDED_PJ = NEURON_PJ + MEMORY_PJ, NEURON_EXPANDED_PJ + MEMORY_PJ + 96 * 10  # 1140.8, 2156.52


def test_the_expanded_counts_equal_the_hand_counts():
    model = HandNet()
    recorder, counter = SpikeRecorder(model), OperationCounter(model)
    with torch.no_grad(), recorder, counter:
        integer = model(X)
    with torch.no_grad(), binary_expansion(model):
        assert torch.allclose(model(X), integer, rtol=1e-6)
    conv, head = counter.layers()
    assert conv.sub_step_events().tolist() == [[3, 2, 1, 1]] * T
    assert head.sub_step_events().tolist() == [[1, 1, 1] + [0] * 13] * T
    counts, expanded = counts_per_image(counter, recorder), expanded_counts(counter, recorder)
    layers = {c.name: (c.time_steps, c.input_reads, c.ops) for c in counts.layers}
    assert layers == {"conv": (2, 14, 28), "head": (2, 6, 12)}
    assert {c.name: (c.time_steps, c.input_reads, c.ops) for c in expanded.layers} == {
        "conv": (8, 14, 28), "head": (32, 6, 12)}
    assert {n.name: (n.steps, n.events) for n in counts.neurons} == {"n1": (8, 14), "n2": (16, 16)}
    assert {n.name: (n.steps, n.events, n.add, n.compare, n.select, n.state_reads) for n in expanded.neurons} == {
        "n1 (4 binary sub-steps a step)": (32, 14, 1, 1, 0, 1), "n1 (once a step)": (8, 0, 1, 2, 2, 0),
        "n2 (4 binary sub-steps a step)": (64, 16, 1, 1, 0, 1), "n2 (once a step)": (16, 0, 1, 2, 2, 0)}
    assert counts.structure == {"bias": 20, "mul": 8, "compare": 6}
    assert expanded.structure == {"bias": 20, "and": 128, "or": 96}


def test_both_views_are_priced_as_by_hand():
    result = analyze(HandNet(), [(X, torch.tensor([0]))], "cpu", energy_models=resolve_energy_models(list(ALL_MODELS)))
    integer = {name: e["total_j"] * 1e12 for name, e in result["energy"].items()}
    expanded = {name: e["total_j"] * 1e12 for name, e in result["energy_expanded"].items()}
    assert integer == pytest.approx({"sdt": SDT_PJ, "neuron": NEURON_PJ, "lemaire": LEMAIRE_PJ})
    assert expanded == pytest.approx({"sdt": SDT_PJ, "neuron": NEURON_EXPANDED_PJ, "lemaire": LEMAIRE_EXPANDED_PJ})
    assert result["energy_views"]["levels"] == [4]


def test_a_product_the_blocks_do_not_declare_is_one_sentence(monkeypatch):
    monkeypatch.setattr(_Mask, "inference_ops", lambda self, inputs, output: {"and": output.numel()})
    with pytest.raises(ValueError, match="declare fewer 'mul' operations than the products"):
        analyze(HandNet(), [(X, torch.tensor([0]))], "cpu")


# ------------------------------------------------------------------ eval's output


@pytest.mark.parametrize("mode", ["multispike", "if_soft"])
def test_eval_reports_both_views_for_multi_level_spikes_only(mode, tmp_path, capsys):
    torch.manual_seed(0)
    model = lively(SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode=mode)))
    result = analyze(model, [(images(2), torch.tensor([0, 1]))], "cpu",
                     energy_models=resolve_energy_models(["sdt", "neuron"]))
    files = write_evaluation(tmp_path, result)
    print_report(result, files)
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    if mode == "if_soft":  # binary spikes: one view, as before
        assert "integer view" not in out and "expanded view" not in out and "two views" not in out
        assert "energy_expanded" not in metrics and "energy_views" not in metrics
        assert not list(tmp_path.glob("*_expanded.csv"))
        return
    assert "energy/image of the multi-level spikes (levels 4) in two views:" in out
    assert "  integer view: a level-k spike" in out and "  expanded view: a level-k spike is k binary spikes" in out
    assert sum(line.startswith("    neuron ") for line in out.splitlines()) == 2  # a row in each view's table
    assert metrics["energy_expanded"]["neuron"]["total_j"] != metrics["energy"]["neuron"]["total_j"]
    assert metrics["energy_expanded"]["sdt"]["total_j"] == pytest.approx(metrics["energy"]["sdt"]["total_j"])
    assert {p.name for p in tmp_path.glob("*_expanded.csv")} == {"energy_sdt_expanded.csv",
                                                                  "energy_neuron_expanded.csv"}
