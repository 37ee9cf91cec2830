"""The neurons through the rest of the tool: the model, checkpoints, operation counts, the optimiser,
training and evaluation on the digits demo, the study plan, config flags. Where a test goes over the
neurons it goes over the registry, so a new neuron is covered without being named."""

import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import spikedriven  # noqa: F401  (registers "sdt" with timm)
from spikedriven import ConfigError, SpikingNeuron, create_neuron, load_checkpoint
from spikedriven.analysis import OperationCounter, analyze
from spikedriven.models.sdt import ORIGINAL_NEURON_NAMES
from spikedriven.cli import build_parser, main
from spikedriven.config import load_config, overrides_from_args
from spikedriven.models import SpikeDrivenTransformer
from spikedriven.neurons import NEURONS, NeuronSpec
from spikedriven.study.plan import plan_runs

from helpers import DEMO, tiny_model_kwargs
from helpers import read_summary

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--embed-dim", "16", "--num-heads", "2", "--epochs", "2", "--warmup-epochs", "0", "--log-interval", "50"]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ the model


def test_the_model_takes_the_neuron_as_an_object():
    torch.manual_seed(0)
    by_keywords = timm.create_model("sdt", **tiny_model_kwargs(spike_mode="if_soft", v_threshold=1.2))
    torch.manual_seed(0)
    by_spec = SpikeDrivenTransformer(**tiny_model_kwargs(neuron=NeuronSpec("if_soft", v_threshold=1.2)))
    torch.manual_seed(0)
    by_mapping = SpikeDrivenTransformer(**tiny_model_kwargs(neuron={"mode": "if_soft", "v_threshold": 1.2}))
    x = torch.randn(2, 3, 16, 16)
    assert by_keywords.neuron_spec == by_spec.neuron_spec == by_mapping.neuron_spec
    assert torch.equal(by_keywords(x), by_spec(x)) and torch.equal(by_spec(x), by_mapping(x))
    # a factory, as timm's act_layer: every layer, the attention one too, is the factory's
    made = []

    def factory():
        made.append(create_neuron("if"))
        return made[-1]

    model = SpikeDrivenTransformer(**tiny_model_kwargs(neuron=factory))
    assert model.neuron_spec is None and len(made) == 1 + 4 + 7 + 1  # a probe, SPS, one block, the head
    assert model(x).shape == (2, 10)
    with pytest.raises(ConfigError, match="either as neuron= or by its settings"):
        SpikeDrivenTransformer(**tiny_model_kwargs(neuron="if", v_threshold=1.0))


@pytest.mark.parametrize("name", list(NEURONS))
def test_the_attention_neuron_keeps_its_own_threshold(name):
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode=name))
    kv = model.block[0].attn.kv_neuron
    if "v_threshold" in NEURONS[name].settings():
        assert kv.v_threshold == 0.5 and model.head_neuron.v_threshold == 1.0
    else:
        assert kv.spec == model.head_neuron.spec


def test_plif_model_size_and_original_checkpoint_load_strictly(tmp_path):
    """The original SDT with --spike-mode plif: 2,567,104 parameters (CIFAR-10 2-256) with its dead weights:
    two talking-heads convolutions (2 x 64) and the leak of three neuron layers forward never calls."""
    torch.manual_seed(0)
    model = timm.create_model("sdt", num_classes=10, spike_mode="plif")
    assert n_params(model) == 2_566_954 + 19  # one leak per neuron layer that runs
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SpikingNeuron):
                m.w.uniform_(-1, 1)  # learned leaks, one per layer
    ours_to_original = {v: k for k, v in ORIGINAL_NEURON_NAMES.items()}
    state = {}
    for key, value in model.state_dict().items():
        layer, _, rest = key.rpartition(".")
        parent, _, leaf = layer.rpartition(".")
        if leaf in ours_to_original:
            key = f"{parent + '.' if parent else ''}{ours_to_original[leaf]}.{rest}"
        state["module." + key] = value.clone()
    state["module.patch_embed.rpe_lif.w"] = torch.tensor(0.3)
    for i in range(2):
        state[f"module.block.{i}.attn.talking_heads.weight"] = torch.randn(8, 8, 1)
        state[f"module.block.{i}.attn.attn_lif.w"] = torch.tensor(0.1)
        assert f"module.block.{i}.attn.talking_heads_lif.w" in state  # the attention-sum neuron
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 2_567_104
    args = argparse.Namespace(spike_mode="plif", dim=256, layer=2, time_steps=4, num_classes=10, TET=False)
    torch.save({"epoch": 299, "arch": "sdt", "state_dict": state, "version": 2, "args": args}, tmp_path / "plif.pth.tar")

    fresh = timm.create_model("sdt", num_classes=10, spike_mode="plif")
    load_checkpoint(fresh, tmp_path / "plif.pth.tar")  # strict
    model.eval(), fresh.eval()
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh(images), model(images))
    with pytest.raises(spikedriven.CheckpointError, match=r"time_steps 4 \(the model has 2\)"):  # the args record T
        load_checkpoint(timm.create_model("sdt", num_classes=10, spike_mode="plif", time_steps=2), tmp_path / "plif.pth.tar")
    with pytest.raises(spikedriven.CheckpointError, match="unexpected keys: block.0.attn.k_neuron.w"):
        load_checkpoint(timm.create_model("sdt", num_classes=10, spike_mode="lif"), tmp_path / "plif.pth.tar")


# ------------------------------------------------------------------ operation counts


class _OneLayer(nn.Module):
    """[B, 4] repeated over T = 2 -> a multispike neuron -> Linear(4, 3) on [T, B, 4]."""

    def __init__(self):
        super().__init__()
        self.neuron = create_neuron({"mode": "multispike", "levels": 4})
        self.fc = nn.Linear(4, 3)
        self.spike_levels = 4

    def forward(self, x):
        return self.fc(self.neuron(x.unsqueeze(0).expand(2, *x.shape))).mean(0)


def test_multilevel_spikes_count_as_their_events():
    """X = [0.5, 1.6, 3.7, -1]: S = [1/4, 2/4, 4/4, 0], that is 1 + 2 + 4 + 0 = 7 events of 4 inputs per step:
    a rate of 7/4 = 1.75 events per input and step, and 1.75 x T 2 x MACs 12 = 42 accumulations per image."""
    model = _OneLayer()
    with torch.no_grad(), OperationCounter(model) as counter:
        model(torch.tensor([[0.5, 1.6, 3.7, -1.0]]))
    (layer,) = counter.layers()
    assert layer.kind == "AC" and layer.macs_per_step == 12
    assert layer.input_rate() == pytest.approx(1.75) and layer.ops_per_image() == pytest.approx(42.0)
    result = analyze(model, [(torch.tensor([[0.5, 1.6, 3.7, -1.0]]), torch.tensor([0]))], "cpu")
    assert result["totals"]["sops"] == pytest.approx(42.0)
    assert result["totals"]["energy_snn_j"] == pytest.approx(42.0 * 0.9e-12)
    assert result["firing_rates"]["neuron"]["mean"] == pytest.approx(1.75)  # events per neuron and step


def test_a_multispike_model_feeds_its_convolutions_spikes():
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="multispike"))
    result = analyze(model, [(torch.randn(2, 3, 16, 16) * 2, torch.tensor([0, 1]))], "cpu")
    kinds = {row["name"]: row["kind"] for row in result["layers"]}
    assert kinds.pop("patch_embed.proj_conv") == "MAC" and set(kinds.values()) == {"AC"}


# ------------------------------------------------------------------ optimiser, training, evaluation


@pytest.mark.parametrize("name", [n for n in NEURONS if list(create_neuron(n).parameters())])
def test_learnable_settings_get_no_weight_decay(name):
    from spikedriven.engine.recipe import build_optimizer_and_scheduler

    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml", {"embed_dim": 32, "depth": 1, "spike_mode": name})
    model = SpikeDrivenTransformer(**cfg.model_kwargs())
    optimizer, _, _ = build_optimizer_and_scheduler(cfg, model)
    learnable = {id(p) for m in model.modules() if isinstance(m, SpikingNeuron) for p in m.parameters()}
    assert learnable
    for group in optimizer.param_groups:
        if any(id(p) in learnable for p in group["params"]):
            assert group["weight_decay"] == 0.0


@pytest.mark.parametrize("name", list(NEURONS))
def test_every_neuron_trains_and_evaluates_on_the_digits(name, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--spike-mode", name, "--output", str(run)]) == 0
    rows = read_summary(run)
    assert len(rows) == 2 and float(rows[-1]["eval_top1"]) > 20, rows  # chance is 10 %
    assert main(["eval", "--checkpoint", str(run)]) == 0
    metrics = json.loads((run / "eval_last" / "metrics.json").read_text())
    assert metrics["neuron"]["mode"] == name and metrics["top1"] == pytest.approx(float(rows[-1]["eval_top1"]))
    learned = metrics["learned_neuron_settings"]
    if not list(create_neuron(name).parameters()):
        assert learned == {}
        return
    # learned per layer: in metrics.json, a plot, TensorBoard
    assert len(learned) == 12 and (run / "eval_last" / "learned_settings.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    (key,) = {k for values in learned.values() for k in values}
    assert f"neuron/block.0.mlp.fc1_neuron/{key}" in events.Tags()["scalars"]
    initial = 2.0 if key == "tau" else 1.0
    assert any(abs(values[key] - initial) > 1e-4 for values in learned.values())  # they did learn


# ------------------------------------------------------------------ the study and the flags


def test_the_study_plans_each_neuron_by_its_settings():
    runs = plan_runs(["sdt"], ["lif", "plif", "lif_soft", "if", "if_learnable", "multispike"], [0.8, 1.2], [1.0], [42])
    assert [r.name for r in runs] == [f"sdt-{name}" for name in (
        "lif-uth1-seed42", "plif-uth1-seed42", "lif_soft-uth1-seed42",  # the leaky ones: --lif-thresholds
        "if-uth0.8-seed42", "if-uth1.2-seed42", "if_learnable-uth0.8-seed42", "if_learnable-uth1.2-seed42",
        "multispike-seed42",  # no threshold
    )]


def test_neuron_settings_as_flags_and_yaml(tmp_path):
    args = build_parser().parse_args(["train", "--spike-mode", "multispike", "--levels", "8"])
    assert load_config(DEMO, overrides_from_args(args)).neuron_spec() == NeuronSpec(
        "multispike", levels=8, rounding="half_up", gradient_window="open")
    args = build_parser().parse_args(["train", "--spike-mode", "multispike", "--neuron-args", "levels=6"])
    assert load_config(DEMO, overrides_from_args(args)).neuron_spec().levels == 6
    conf = tmp_path / "m.yml"
    conf.write_text("spike_mode: multispike\nneuron_args: {levels: 2}\n")
    assert load_config(conf).neuron_spec().levels == 2
    # the study's CIFAR config says tau: 2.0 for every neuron: at its default, it is no contradiction
    assert load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml", {"spike_mode": "if"}).neuron_spec().mode == "if"


def test_neurons_command_lists_every_neuron(capsys):
    assert main(["neurons"]) == 0
    out = capsys.readouterr().out
    for name, cls in NEURONS.items():
        assert f"{name}: {cls.title}" in out and cls.equations in out
    assert "--levels" in out and "rect" in out
