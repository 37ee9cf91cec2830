"""Energy models (sdt, neuron, lemaire) against operations counted by hand, and their inputs."""

import csv

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import spikedriven  # noqa: F401  (registers "sdt" with timm)
from spikedriven import create_neuron
from spikedriven.analysis import ENERGY_MODELS, analyze, resolve_energy_models
from spikedriven.analysis.operations import OperationCounter
from spikedriven.cli import main
from spikedriven.errors import ConfigError
from spikedriven.analysis.reports import write_energy_model_csv
from spikedriven.spike_ops import SpikeConv2d

from helpers import tiny_model_kwargs

T = 2


class LifIfNet(nn.Module):
    """conv0 (real input) -> LIF -> conv1 (spikes) -> IF -> head (spikes, with bias), for one image
    [1, 1, 1, 2] holding (1.5, 0.8), repeated over T = 2 steps."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 2, 1, bias=False)
        self.lif = create_neuron({"mode": "lif", "tau": 2.0, "v_threshold": 1.0})
        self.conv1 = SpikeConv2d(2, 2, 1, bias=False)
        self.if_ = create_neuron({"mode": "if", "v_threshold": 1.0})
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv0.weight.copy_(torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1))
            self.conv1.weight.copy_(torch.tensor([[0.6, 0.6], [0.0, 1.0]]).reshape(2, 2, 1, 1))

    def forward(self, x):
        b = x.shape[0]
        x = x.unsqueeze(0).expand(T, *x.shape).flatten(0, 1)  # [T*B, 1, 1, 2]
        s0 = self.lif(self.conv0(x).reshape(T, b, 2, 1, 2))
        s1 = self.if_(self.conv1(s0.flatten(0, 1)).reshape(T, b, 2, 1, 2))
        return self.head(s1.flatten(2)).mean(0)  # head input [T, B, 4]


# By hand. conv0 gives channel 0 = (1.5, 0.8) and channel 1 = (3.0, 1.6) at both steps.
# LIF (tau 2, H = V + (X - V) / 2, hard reset to 0):
#   t0: H = (0.75, 0.4 | 1.5, 0.8) -> S = (0, 0 | 1, 0), V = (0.75, 0.4 | 0, 0.8)
#   t1: H = (1.125, 0.6 | 1.5, 1.2) -> S = (1, 0 | 1, 1)                    4 spikes in 8 neuron steps
# conv1 (out0 = 0.6 s_c0 + 0.6 s_c1, out1 = s_c1): t0 (0.6, 0 | 1, 0), t1 (1.2, 0.6 | 1, 1)
# IF (H = V + X, hard reset to 0):
#   t0: H = (0.6, 0 | 1, 0) -> S = (0, 0 | 1, 0), V = (0.6, 0 | 0, 0)
#   t1: H = (1.8, 0.6 | 1, 1) -> S = (1, 0 | 1, 1)                         4 spikes in 8 neuron steps
# Layers, per image:
#   conv0: real input, 4 outputs x 1 MAC = 4 MACs per step, x T = 8 MACs; 2 input values x T = 4 reads
#   conv1: 4 outputs x 2 = 8 MACs per step; fed 4 spikes in 2 x 4 inputs: fr 0.5, SOPs 0.5 x 2 x 8 = 8
#   head: 3 outputs x 4 = 12 MACs per step; fed 4 spikes in 2 x 4: SOPs 0.5 x 2 x 12 = 12
#   head bias: 3 outputs x 2 steps = 6 adds (no batch norm here, no other bias)
SDT_PJ = 4.6 * 8 + 0.9 * (8 + 12)  # 54.8
LIF_STEP_PJ = 2 * 0.9 + 3.7 + 0.9 + 0.9  # charge: 2 adds and the leak's multiply; compare; reset's select
IF_STEP_PJ = 0.9 + 0.9 + 0.9  # add; compare; select
NEURON_PJ = SDT_PJ + 8 * LIF_STEP_PJ + 8 * IF_STEP_PJ + 6 * 0.9  # 140.2
# Memory (e_read = e_write = 5, e_addr = 0.1): each op reads its weight and reads and writes a potential (15 pJ);
# conv0 reads its 4 input values (5 each); spike-fed layers read and address each input event (5.1 each);
# each neuron step reads and writes its state (10); each output spike is written with its address (5.1)
MEMORY_PJ = (8 * 15 + 4 * 5) + (8 * 15 + 4 * 5.1) + (12 * 15 + 4 * 5.1) + 2 * (8 * 10 + 4 * 5.1)  # 681.6
LEMAIRE_PJ = NEURON_PJ + MEMORY_PJ


def lif_if_result(names=("sdt", "neuron", "lemaire"), constants=None):
    net = LifIfNet()
    images = torch.tensor([[[[1.5, 0.8]]]])
    return analyze(net, [(images, torch.tensor([0]))], "cpu", energy_models=resolve_energy_models(list(names), constants))


def test_the_hand_counted_spikes_are_what_the_network_fires():
    result = lif_if_result(["sdt"])
    assert result["firing_rates"]["lif"]["per_step"] == [0.25, 0.75]
    assert result["firing_rates"]["if_"]["per_step"] == [0.25, 0.75]
    ops = {row["name"]: row["sops"] for row in result["layers"]}
    assert ops == pytest.approx({"conv0": 8, "conv1": 8, "head": 12})


def test_each_energy_model_equals_the_hand_calculation():
    energy = lif_if_result()["energy"]
    assert energy["sdt"]["total_j"] * 1e12 == pytest.approx(SDT_PJ)
    assert energy["neuron"]["total_j"] * 1e12 == pytest.approx(NEURON_PJ)
    assert energy["lemaire"]["total_j"] * 1e12 == pytest.approx(LEMAIRE_PJ)
    neuron_parts = {p["name"]: p for p in energy["neuron"]["components"]}
    assert neuron_parts["lif"]["count"] == 8 and neuron_parts["lif"]["energy_j"] * 1e12 == pytest.approx(8 * LIF_STEP_PJ)
    assert neuron_parts["if_"]["energy_j"] * 1e12 == pytest.approx(8 * IF_STEP_PJ)
    assert energy["neuron"]["by_kind_j"]["bias"] * 1e12 == pytest.approx(6 * 0.9)
    assert energy["lemaire"]["by_kind_j"]["memory"] * 1e12 == pytest.approx(MEMORY_PJ)


def test_the_leak_costs_nothing_for_if_and_a_multiply_per_step_for_lif():
    energy = lif_if_result(["neuron"], {"e_mul": 10.0})["energy"]["neuron"]
    parts = {p["name"]: p["energy_j"] * 1e12 for p in energy["components"]}
    assert parts["if_"] == pytest.approx(8 * IF_STEP_PJ)  # no multiply: e_mul does not enter
    assert parts["lif"] == pytest.approx(8 * (LIF_STEP_PJ - 3.7 + 10.0))
    sdt_only = lif_if_result(["sdt"], {"e_mac": 4.6})["energy"]["sdt"]
    assert {p["kind"] for p in sdt_only["components"]} == {"MAC", "AC"}  # sdt never sees a neuron


def test_constants_are_settable_and_printed():
    energy = lif_if_result(["sdt", "lemaire"], {"e_ac": 1.0, "e_read": 2.0})["energy"]
    assert energy["sdt"]["total_j"] * 1e12 == pytest.approx(4.6 * 8 + 1.0 * 20)
    assert energy["lemaire"]["constants_pj"]["e_read"] == 2.0
    assert "e_read = 2 pJ" in energy["lemaire"]["convention"] and "E_AC = 1 pJ" in energy["sdt"]["convention"]


def test_the_sdt_model_reproduces_the_legacy_totals_and_counts_structure():
    torch.manual_seed(0)
    model = timm.create_model("sdt", **tiny_model_kwargs(spike_mode="if_soft"))
    images = torch.randn(3, 3, 16, 16) * 3
    counter_model = resolve_energy_models(["sdt", "neuron"])
    result = analyze(model, [(images, torch.zeros(3, dtype=torch.long))], "cpu", energy_models=counter_model)
    assert result["energy"]["sdt"]["total_j"] == pytest.approx(result["totals"]["energy_snn_j"])
    # bias adds: every batch norm's output (its folded shift absorbs the conv's own bias) and the head's
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, key=name: outputs.__setitem__(key, o.numel()))
             for name, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(images)
    for h in hooks:
        h.remove()
    bias = result["energy"]["neuron"]["by_kind_j"]["bias"] / 0.9e-12
    assert bias == pytest.approx(sum(outputs.values()) / 3)
    # the attention: masks 2 T C N and token sums T C (N - 1) per block, per image
    kw = tiny_model_kwargs(spike_mode="if_soft")
    n = (16 // 4) ** 2  # pooling 0011 halves the 16 px image twice
    masks = 2 * kw["time_steps"] * kw["embed_dim"] * n * kw["depth"]
    assert result["energy"]["neuron"]["by_kind_j"]["and"] == pytest.approx(masks * 0.03e-12)


def test_dense_macs_match_torch_flop_counter():
    model = timm.create_model("sdt", **tiny_model_kwargs(spike_mode="lif")).eval()
    images = torch.randn(2, 3, 16, 16)
    counter = OperationCounter(model)
    with torch.no_grad(), counter, FlopCounterMode(display=False) as flops:
        model(images)
    ours = sum(layer.macs_per_step * layer.time_steps for layer in counter.layers()) * 2  # images in the batch
    assert flops.get_total_flops() == 2 * ours  # a MAC is two FLOPs


def test_energy_csv_lists_components_and_total(tmp_path):
    estimate = lif_if_result(["neuron"])["energy"]["neuron"]
    path = write_energy_model_csv(tmp_path / "energy_neuron.csv", estimate)
    rows = list(csv.DictReader(path.open()))
    assert rows[-1]["component"] == "total" and float(rows[-1]["energy_pj"]) == pytest.approx(NEURON_PJ, abs=1e-3)
    assert sum(float(r["energy_pj"]) for r in rows[:-1]) == pytest.approx(NEURON_PJ, abs=1e-2)


@pytest.mark.parametrize("names, constants, words", [
    (["joules"], {}, "unknown energy model 'joules'"),
    (["sdt"], {"e_ac": 0}, "e_ac must be a positive number"),
    (["sdt"], {"e_ac": -1.0}, "e_ac must be a positive number"),
    (["sdt"], {"e_ac": "cheap"}, "e_ac must be a positive number"),
    (["sdt"], {"e_read": 2.0}, "e_read is not used by sdt"),
    ([], {}, "at least one energy model"),
])
def test_bad_energy_input_is_one_sentence(names, constants, words):
    with pytest.raises(ConfigError, match=words):
        resolve_energy_models(names, constants)


@pytest.mark.parametrize("flags, words", [
    (["--energy", "sdt,joules"], "unknown energy model 'joules'"),
    (["--energy", "lemaire", "--energy-constants", "e_read=-2"], "e_read must be a positive number"),
    (["--energy-constants", "e_read"], "takes key=value"),
    (["--e-mac", "4", "--energy-constants", "e_mac=5"], "disagree"),
])
def test_bad_energy_flags_exit_2_before_reading_anything(flags, words, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pth.tar"), *flags]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_every_model_names_its_constants():
    for model in ENERGY_MODELS.values():
        assert model.constants and all(c.default > 0 and c.doc for c in model.constants.values())


def test_a_neuron_without_a_declared_cost_is_named_not_silently_free():
    from spikedriven.neurons import NeuronSpec, register_neuron
    from spikedriven.neurons.integrate_fire import IF
    from spikedriven.neurons.registry import NEURONS
    from spikedriven.neurons.spec import StepOps

    class Costless(IF):
        name, title = "costless_test", "IF without declared cost"
        ops = StepOps()

    register_neuron(Costless)
    try:
        net = LifIfNet()
        net.if_ = Costless(NeuronSpec("costless_test"))
        images = torch.tensor([[[[1.5, 0.8]]]])
        energy = analyze(net, [(images, torch.tensor([0]))], "cpu",
                         energy_models=resolve_energy_models(["sdt", "neuron"]))["energy"]
        assert energy["sdt"]["notes"] == []
        assert energy["neuron"]["notes"] == [
            "neuron costless_test declares no cost per step (its class's `ops`), so its steps count as free"]
    finally:
        NEURONS.pop("costless_test", None)
