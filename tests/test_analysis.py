"""Evaluation analysis: firing rates, operation counts, energy, report files, compare."""

import csv
import json
import math

import matplotlib.image
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import spikedriven  # noqa: F401  (registers "sdt" with timm)
from spikedriven import SpikedrivenError, create_neuron
from spikedriven.neurons import ThresholdNeuron
from spikedriven.analysis import E_AC, E_MAC, analyze
from spikedriven.models import SpikeDrivenTransformer
from spikedriven.analysis.compare import compare
from spikedriven.analysis.reports import format_summary, write_evaluation

from helpers import tiny_model_kwargs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ------------------------------------------------------------ hand-computed net


class HandNet(nn.Module):
    """conv0 (real input) -> IF -> conv1 (spikes) -> spatial mean -> IF -> head (spikes).

    Images are [B, 1, 2, 2] filled with one value c per sample, repeated over T = 3.
    """

    T = 3

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 1, 1, bias=False)
        self.neuron1 = create_neuron({"mode": "if", "v_threshold": 1.0})
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        self.neuron2 = create_neuron({"mode": "if", "v_threshold": 1.0})
        self.head = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv0.weight.fill_(1.0)
            self.conv1.weight.copy_(torch.tensor([1.0, 0.5]).reshape(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))

    def forward(self, x):
        t, b = self.T, x.shape[0]
        x = x.unsqueeze(0).expand(t, *x.shape).flatten(0, 1)  # [T*B, 1, 2, 2]
        s1 = self.neuron1(self.conv0(x).reshape(t, b, 1, 2, 2))
        s2 = self.neuron2(self.conv1(s1.flatten(0, 1)).reshape(t, b, 2, 2, 2).mean((3, 4)))
        return self.head(s2).mean(0)  # head input [T, B, 2]


# IF, threshold 1, hard reset, constant input c over 3 steps:
#   0.6 -> V 0.6, 1.2 fire, 0.6 -> [0,1,0];   0.3 -> never;   0.4 -> 0.4, 0.8, 1.2 -> [0,0,1];   1.0 -> [1,1,1]
VALUES = [0.6, 0.3, 0.4, 0.6, 1.0]
# neuron2 channel 0 gets s1 (fires whenever s1 does); channel 1 gets 0.5 * s1, which
# only reaches 1 for [1,1,1] at t=1. Spikes per step summed over the 5 samples:
N1_RATE = [1 / 5, 3 / 5, 2 / 5]  # batch-weighted (batches 2, 2, 1) would give [1/3, 2/3, 1/2]
N2_RATE = [1 / 10, 4 / 10, 2 / 10]  # channel 0: 1, 3, 2 spikes; channel 1: 0, 1, 0; 10 neurons per step


def hand_loader():
    images = torch.tensor(VALUES).reshape(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    return DataLoader(TensorDataset(images, torch.zeros(5, dtype=torch.long)), batch_size=2)


def hand_result(**kwargs):
    return analyze(HandNet(), hand_loader(), "cpu", **kwargs)


def test_firing_rates_are_weighted_by_samples_with_a_partial_batch():
    result = hand_result()
    assert result["samples"] == 5 and result["time_steps"] == 3
    rates = result["firing_rates"]
    assert list(rates) == ["neuron1", "neuron2"]
    assert rates["neuron1"]["per_step"] == pytest.approx(N1_RATE)
    assert rates["neuron1"]["mean"] == pytest.approx(0.4)
    assert rates["neuron2"]["per_step"] == pytest.approx(N2_RATE)
    # all spikes / all neuron-steps: (24 + 7) / (5*4*3 + 5*2*3)
    assert result["mean_firing_rate"] == pytest.approx(31 / 90)


def test_layer_inputs_are_mapped_from_the_model_itself():
    layers = {row["name"]: row for row in hand_result()["layers"]}
    assert list(layers) == ["conv0", "conv1", "head"]
    # the last batch of conv0 is all ones (binary), the others are not: real-valued overall
    assert layers["conv0"]["kind"] == "MAC" and layers["conv0"]["input_firing_rate"] is None
    assert layers["conv1"]["kind"] == "AC" and layers["head"]["kind"] == "AC"
    assert layers["conv1"]["input_firing_rate_per_step"] == pytest.approx(N1_RATE)
    assert layers["head"]["input_firing_rate_per_step"] == pytest.approx(N2_RATE)
    # dense MACs per image and step: out elements x in_ch x kH x kW; in x out for Linear
    assert [layers[n]["macs_per_step"] for n in layers] == [1 * 4 * 1, 2 * 4 * 1, 2 * 3]
    assert all(row["time_steps"] == 3 for row in layers.values())


@pytest.mark.parametrize("e_mac, e_ac", [(E_MAC, E_AC), (2e-12, 1e-12)])
def test_sops_and_energy_match_a_hand_calculation(e_mac, e_ac):
    result = hand_result(e_mac=e_mac, e_ac=e_ac)
    layers = {row["name"]: row for row in result["layers"]}
    # conv0: T x 4 MACs; conv1: 4.8 input spikes per image x fan-out 2; head: 1.4 spikes x fan-out 3
    assert layers["conv0"]["sops"] == pytest.approx(12)
    assert layers["conv1"]["sops"] == pytest.approx(0.4 * 3 * 8) == pytest.approx(4.8 * 2)
    assert layers["head"]["sops"] == pytest.approx(1.4 * 3)
    assert layers["conv0"]["energy_j"] == pytest.approx(e_mac * 12)
    assert layers["conv1"]["energy_j"] == pytest.approx(e_ac * 9.6)
    totals = result["totals"]
    assert totals["dense_macs_per_step"] == 18
    assert totals["mac_ops"] == pytest.approx(12)
    assert totals["sops"] == pytest.approx(13.8)
    assert totals["energy_snn_j"] == pytest.approx(e_mac * 12 + e_ac * 13.8)
    assert totals["energy_ann_j"] == pytest.approx(e_mac * 18)
    assert totals["snn_to_ann_energy_ratio"] == pytest.approx((e_mac * 12 + e_ac * 13.8) / (e_mac * 18))
    assert "no T" in result["convention"] and f"{e_ac * 1e12:g} pJ" in result["convention"]


def test_accuracy_and_loss_are_weighted_by_samples_and_top5_fits_few_classes():
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [1, 0, 2], [0, 0.5, 1], [5, 4, 0]])
    labels = torch.tensor([0, 1, 0, 1, 0])  # correct: yes, yes, no, no, yes
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    result = analyze(model, DataLoader(TensorDataset(logits, labels), batch_size=2), "cpu")
    assert result["top1"] == pytest.approx(60.0)  # batch-weighted would be 66.7
    assert result["top5_k"] == 3 and result["top5"] == pytest.approx(100.0)
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    assert result["time_steps"] == 1 and result["firing_rates"] == {}
    assert model.training  # mode restored


def test_counts_follow_the_spikes_of_an_sdt_with_t3():
    model = SpikeDrivenTransformer(**tiny_model_kwargs(time_steps=3, spike_mode="if"))
    for m in model.modules():  # weights that make every layer fire, so the comparison below means something
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=2 / math.sqrt(m.weight[0].numel()))
    images = torch.randn(5, 3, 16, 16)
    result = analyze(model, DataLoader(TensorDataset(images, torch.arange(5)), batch_size=2), "cpu")
    assert result["time_steps"] == 3
    rates = {n: r["per_step"] for n, r in result["firing_rates"].items()}
    layers = {row["name"]: row for row in result["layers"]}
    # layers whose input is exactly a neuron's output ("0011": no pooling after SPS stages 1, 2)
    fed_by = {
        "patch_embed.proj_conv1": "patch_embed.proj_neuron",
        "patch_embed.proj_conv2": "patch_embed.proj_neuron1",
        "patch_embed.rpe_conv": "patch_embed.rpe_neuron",
        "block.0.attn.q_conv": "block.0.attn.shortcut_neuron",
        "block.0.attn.v_conv": "block.0.attn.shortcut_neuron",
        "block.0.mlp.fc1_conv": "block.0.mlp.fc1_neuron",
        "block.0.mlp.fc2_conv": "block.0.mlp.fc2_neuron",
        "head": "head_neuron",
    }
    for layer, neuron in fed_by.items():
        assert min(rates[neuron]) > 0.05, neuron
        assert layers[layer]["input_firing_rate_per_step"] == pytest.approx(rates[neuron]), layer
    assert [row["kind"] for row in result["layers"]].count("MAC") == 1
    assert layers["patch_embed.proj_conv"]["kind"] == "MAC"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_mixed_precision_keeps_spikes_binary():
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="if", v_threshold=0.3))
    loader = [(torch.randn(3, 3, 16, 16) * 3, torch.arange(3))]
    result = analyze(model, loader, "cpu", amp="bf16")
    kinds = [row["kind"] for row in result["layers"]]
    assert kinds == ["MAC"] + ["AC"] * (len(kinds) - 1)
    assert all(0.0 <= r["mean"] <= 1.0 for r in result["firing_rates"].values())


# ------------------------------------------------------- the CIFAR 2-256 model

CIFAR_MACS = {
    "patch_embed.proj_conv": 32 * 32 * 32 * 3 * 9,  # 0.885 M, real-valued input
    "patch_embed.proj_conv1": 64 * 32 * 32 * 32 * 9,  # 18.87 M
    "patch_embed.proj_conv2": 128 * 32 * 32 * 64 * 9,  # 75.50 M
    "patch_embed.proj_conv3": 256 * 16 * 16 * 128 * 9,  # 75.50 M (after max-pool to 16x16)
    "patch_embed.rpe_conv": 256 * 8 * 8 * 256 * 9,  # 37.75 M
    **{f"block.{i}.attn.{n}_conv": 256 * 64 * 256 for i in range(2) for n in ("q", "k", "v", "proj")},  # 4.19 M
    **{f"block.{i}.mlp.fc{j}_conv": 1024 * 64 * 256 for i in range(2) for j in (1, 2)},  # 16.78 M
    "head": 256 * 10,
}


def test_cifar_model_dense_count_and_sops_at_full_firing(monkeypatch):
    # every neuron fires at every step, so every spike-fed layer sees rate 1.0
    monkeypatch.setattr(ThresholdNeuron, "fire", lambda self, h: torch.ones_like(h))
    model = timm.create_model("sdt", num_classes=10)
    assert model.time_steps == 4
    images = torch.randn(1, 2, 3, 32, 32)  # [B, T, C, H, W]: the input brings T = 2
    result = analyze(model, [(images, torch.tensor([3]))], "cpu")
    t = 2
    assert result["time_steps"] == t
    rows = {row["name"]: row for row in result["layers"]}
    assert {n: r["macs_per_step"] for n, r in rows.items()} == CIFAR_MACS
    total = sum(CIFAR_MACS.values())
    assert result["totals"]["dense_macs_per_step"] == total and round(total / 1e6, 1) == 309.2
    for name, row in rows.items():
        assert row["sops"] == pytest.approx(t * CIFAR_MACS[name]), name
        if name != "patch_embed.proj_conv":
            assert row["kind"] == "AC" and row["input_firing_rate"] == pytest.approx(1.0), name
    first = CIFAR_MACS["patch_embed.proj_conv"]
    assert rows["patch_embed.proj_conv"]["kind"] == "MAC"
    assert result["totals"]["sops"] == pytest.approx(t * (total - first))
    assert result["totals"]["energy_snn_j"] == pytest.approx(E_MAC * first * t + E_AC * t * (total - first))
    assert result["totals"]["energy_ann_j"] == pytest.approx(E_MAC * total)


# ----------------------------------------------------------------- reports


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    assert matplotlib.image.imread(path).ndim == 3


def test_evaluation_folder_files(tmp_path):
    result = hand_result()
    files = write_evaluation(tmp_path / "eval", result, config={"spike_mode": "if", "v_threshold": 1.0}, checkpoint="run/best.pth")
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["checkpoint"] == "run/best.pth" and metrics["config"]["spike_mode"] == "if"
    assert metrics["firing_rates"]["neuron1"]["per_step"] == pytest.approx(N1_RATE)
    assert metrics["convention"] == result["convention"]

    with files["firing_rates_csv"].open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["layer", "t0", "t1", "t2", "mean"]
    assert [r[0] for r in rows[1:]] == ["neuron1", "neuron2"]
    assert [float(v) for v in rows[1][1:]] == pytest.approx(N1_RATE + [0.4], abs=1e-6)

    with files["energy_csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["layer", "kind", "macs_per_step", "input_firing_rate", "sops", "energy_pj"]
    assert [(r["layer"], r["kind"], r["macs_per_step"]) for r in rows] == [("conv0", "MAC", "4"), ("conv1", "AC", "8"), ("head", "AC", "6")]
    assert rows[0]["input_firing_rate"] == "" and float(rows[1]["input_firing_rate"]) == pytest.approx(0.4)
    assert float(rows[1]["energy_pj"]) == pytest.approx(0.9 * 9.6, abs=1e-3)

    for key in ("firing_rates_png", "energy_png"):
        assert_png(files[key])


def test_terminal_summary_is_compact_and_complete():
    text = format_summary(hand_result())
    assert "samples 5  T 3" in text and "top-3 100.00%" in text
    assert "SOPs/image 13.8  " in text and "SNN 67.6 pJ  ANN 82.8 pJ" in text and "convention:" in text
    assert "neuron1" in text and "0.4000" in text
    assert "first layer (conv0): the analogue input as loaded (no encoding), counted as MACs" in text
    assert len(text.splitlines()) == 4 + 1 + 2


def test_compare_reads_a_metrics_file_and_an_evaluation_folder(tmp_path):
    write_evaluation(tmp_path / "a", hand_result(), config={"spike_mode": "if", "v_threshold": 1.0})
    sdt = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="if_soft", v_threshold=0.8))
    loader = DataLoader(TensorDataset(torch.randn(3, 3, 16, 16) * 3, torch.arange(3)), batch_size=2)
    write_evaluation(tmp_path / "run_b" / "eval", analyze(sdt, loader, "cpu"))

    text, rows = compare([tmp_path / "a" / "metrics.json", tmp_path / "run_b"], out_dir=tmp_path / "cmp")
    assert [(r["mode"], r["u_th"]) for r in rows] == [("if", 1.0), ("if_soft", 0.8)]
    lines = text.splitlines()
    assert len(lines) == 3 and "u_th" in lines[0] and "energy uJ" in lines[0]
    assert lines[1].startswith("a ") and " if " in lines[1] and lines[2].startswith("run_b/eval ") and "if_soft" in lines[2]
    assert_png(tmp_path / "cmp" / "compare.png")


def test_compare_refuses_what_is_not_an_evaluation(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpikedrivenError, match="no metrics.json"):
        compare([tmp_path / "empty"])
    with pytest.raises(SpikedrivenError, match="does not exist"):
        compare([tmp_path / "nowhere"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpikedrivenError, match="not a readable metrics file"):
        compare([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text('{"top1": 1}')
    with pytest.raises(SpikedrivenError, match="not a spikedriven evaluation metrics file"):
        compare([tmp_path / "other.json"])
