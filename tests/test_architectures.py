"""Every registered architecture, found by iterating the registry: it builds at each entry point, runs every
registered neuron, trains, gives the same spikes on the fused path and the per-step loop, is counted by the
spike recorder as by hand, exports to timm and back, and refuses bad input with one sentence."""

import copy
import json

import pytest
import timm
import torch

import spikedriven  # noqa: F401  (registers the models with timm)
from spikedriven import SpikeRecorder
from spikedriven.analysis.operations import dense_size
from spikedriven.config import load_config, load_yaml
from spikedriven.engine import checkpoint as ckpt_io
from spikedriven.errors import CheckpointError, ConfigError
from spikedriven.export import export_run
from spikedriven.models import ARCHITECTURES, architecture_of, build_model, model_names
from spikedriven.neurons import NEURONS, SpikingNeuron, fused_multi_step

from helpers import DEMO, run_cli

FAMILIES = sorted(ARCHITECTURES)


def demo_model(family: str) -> str:
    """The family's entry point that the digits demo gives a small size (every family must have one)."""
    sized = [name for name in load_yaml(DEMO)["models"] if architecture_of(name).name == family]
    assert sized, f"conf/digits/demo.yml gives no model of the {family} family a small size under models:"
    return sized[0]


def smaller(family: str) -> dict:
    """Settings that make the family's demo model smaller still: one width, or a width per stage."""
    settings = ARCHITECTURES[family].settings
    if "embed_dim" in settings:
        return {"embed_dim": 16, "num_heads": 2}
    return {"embed_dims": [8, 16, 16, 16], "num_heads": 2} if "embed_dims" in settings else {}


def deeper(family: str) -> dict:
    """Settings that give the family's demo model two transformer blocks."""
    settings = ARCHITECTURES[family].settings
    return {"depth": 2} if "depth" in settings else {"depths": [1, 1]} if "depths" in settings else {}


def tiny(family: str, **overrides) -> torch.nn.Module:
    """The family's demo model at a smaller width, for tests that run many neurons."""
    values = {"model": demo_model(family), **smaller(family), **overrides}
    return build_model(load_config(DEMO, values))


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 16, generator=generator) * 2


def test_every_entry_point_builds_and_is_listed(capsys):
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0
    for name in model_names():
        with torch.device("meta"):
            model = timm.create_model(name)
        params, macs = dense_size(model, model.in_chans, model.img_size)
        assert params > 0 and macs > 0
        assert f"{name} " in out and f"{params:,} parameters" in out and f"{macs / 1e6:,.2f} M MACs per step" in out


def test_the_study_model_lists_its_published_size(capsys):
    """SDT 2-256 on CIFAR-10: 2,566,954 parameters without the original's dead talking-heads weights, and
    309.2 M dense MACs per step (SPEC 3.7)."""
    _, out, _ = run_cli(["models"], capsys)
    line = next(line for line in out.splitlines() if line.strip().startswith("sdt "))
    assert "2,566,954 parameters" in line and "309.17 M MACs per step" in line


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", sorted(NEURONS))
def test_every_neuron_runs_in_every_architecture(family, mode):
    model = tiny(family, spike_mode=mode)
    layers = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    assert layers and all(m.name == mode for m in layers)
    logits = model(images())
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_attention_neuron_keeps_its_own_threshold(family):
    model = tiny(family, spike_mode="if_soft", v_threshold=1.3)
    thresholds = sorted({m.v_threshold for m in model.modules() if isinstance(m, SpikingNeuron)})
    # a family whose original gives its attention neuron no threshold of its own (SDT-V3) has none either
    assert thresholds == ([0.5, 1.3] if "attn_v_threshold" in ARCHITECTURES[family].settings else [1.3])


@pytest.mark.parametrize("family", FAMILIES)
def test_two_training_steps_change_the_weights_and_lower_the_loss_on_their_batch(family):
    torch.manual_seed(0)
    model = tiny(family, spike_mode="if_soft", v_threshold=0.5).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = images(8), torch.arange(8) % 10
    before = copy.deepcopy(model.state_dict())
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


FUSED = [name for name in sorted(NEURONS) if NEURONS[name]().fused_form() is not None]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", FUSED)
def test_the_fused_path_gives_the_loops_spikes_and_gradients(family, mode):
    """The fused kernels' maths (its PyTorch form on CPU) in every neuron layer against the per-step loop."""
    reference = tiny(family, spike_mode=mode, **deeper(family))
    fused = copy.deepcopy(reference)
    for m in fused.modules():
        if isinstance(m, SpikingNeuron):
            m.multi_step = lambda x, m=m: fused_multi_step(x, m.fused_form(), **m.fused_gradient())
    x = images()
    logits, logits_ref = fused(x), reference(x)
    assert torch.equal(logits, logits_ref)
    logits.square().sum().backward()
    logits_ref.square().sum().backward()
    for (name, p), p_ref in zip(fused.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["if", "multispike"])
def test_the_recorder_counts_the_spikes_each_layer_emitted(family, mode):
    model = tiny(family, spike_mode=mode, v_threshold=0.5) if mode != "multispike" else tiny(family, spike_mode=mode)
    model.eval()
    with torch.no_grad(), SpikeRecorder(model, keep_spikes=True) as rec:
        model(images(4, seed=1))
        model(images(2, seed=2))
    levels = model.spike_levels
    for name, counts in rec.spike_counts.items():
        by_hand = sum(s.flatten(2).sum((1, 2), dtype=torch.float64) for s in rec.spikes[name]) * levels
        assert torch.equal(counts, by_hand), name
    assert sum(float(c.sum()) for c in rec.spike_counts.values()) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_an_export_loads_in_timm_and_gives_the_same_logits(family, tmp_path):
    cfg = load_config(DEMO, {"model": demo_model(family), "spike_mode": "if_soft", "v_threshold": 0.5})
    model = build_model(cfg).eval()
    with torch.no_grad():  # weights far from the init, so that spikes reach the head and logits differ by input
        for p in model.parameters():
            p.mul_(4.0)
    run = tmp_path / "run"
    run.mkdir()
    ckpt_io.save_checkpoint(run / "last.pth.tar", {"epoch": 1, "state_dict": model.state_dict(), "config": cfg.to_dict(),
                                                   "model_args": cfg.model_kwargs()})
    export_run(run, tmp_path / "export")
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported["architecture"] == cfg.model and exported["num_features"] == model.num_features
    again = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True).eval()
    x = images(4) / 2  # the digits' 16 px
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(again(x), logits) and not torch.equal(logits[0], logits[1])


# ------------------------------------------------------------------ bad input: one sentence, exit 2


def test_an_unknown_model_names_the_registered_ones(capsys):
    code, _, err = run_cli(["train", "-c", DEMO, "--model", "spikeformer"], capsys)
    assert code == 2 and "unknown model 'spikeformer'" in err and all(name in err for name in model_names())
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_setting_no_model_takes_is_refused_with_the_models_settings():
    with pytest.raises(ConfigError, match="model sdt takes no depht"):
        load_config(DEMO, {"model_args": {"depht": 2}})


def test_sizes_that_do_not_divide_are_one_sentence(capsys):
    code, _, err = run_cli(["train", "-c", DEMO, "--embed-dim", "36", "--num-heads", "5"], capsys)
    assert code == 2 and "error: model sdt:" in err and "Traceback" not in err


def test_each_model_takes_its_own_settings_from_models_and_model_args_over_them(tmp_path):
    path = tmp_path / "two.yml"
    path.write_text("model: sdt\nmodels:\n  sdt: {depth: 2, embed_dim: 32}\nmodel_args: {embed_dim: 64}\n")
    assert load_config(path).model_settings()["depth"] == 2 and load_config(path).model_settings()["embed_dim"] == 64
    path.write_text("model: sdt\nmodels:\n  nosuchmodel: {depth: 2}\n")
    with pytest.raises(ConfigError, match="unknown model 'nosuchmodel'"):
        load_config(path)
    path.write_text("model: sdt\nmodels:\n  sdt: {depth: 0}\n")
    with pytest.raises(ConfigError, match="model sdt: depth must be >= 1"):
        load_config(path)


def test_a_checkpoint_of_another_architecture_names_both(tmp_path):
    model = tiny("sdt")
    path = tmp_path / "other.pth.tar"
    ckpt_io.save_checkpoint(path, {"state_dict": model.state_dict(), "config": {"model": "someone_elses"}})

    class Other(torch.nn.Module):
        architecture = "sdt"

    with pytest.raises(CheckpointError, match="holds someone_elses weights, and the model to load it into is sdt"):
        ckpt_io.load_checkpoint(Other(), path)


@pytest.fixture(scope="module")
def spikformer_run(tmp_path_factory):
    """One short digits run of the demo's Spikformer."""
    from helpers import SMALL

    from spikedriven.cli import main

    folder = tmp_path_factory.mktemp("arch") / "run"
    assert main(["train", "-c", DEMO, "--model", "spikformer_cifar", *SMALL, "--output", str(folder)]) == 0
    return folder


@pytest.mark.slow
def test_a_run_records_its_model_and_eval_resume_and_weights_know_it(spikformer_run, tmp_path, capsys):
    from helpers import SMALL

    recorded = load_yaml(spikformer_run / "config.yaml")
    assert recorded["model"] == "spikformer_cifar"
    assert json.loads((spikformer_run / "results.json").read_text())["model"] == "spikformer_cifar"
    code, out, err = run_cli(["eval", "--checkpoint", str(spikformer_run)], capsys)
    assert code == 0, err
    metrics = json.loads((spikformer_run / "eval_last" / "metrics.json").read_text())
    assert metrics["config"]["model"] == "spikformer_cifar" and metrics["config"]["model_args"]["num_heads"] == 2
    # a flag that repeats a setting is read as its type ("1" is the run's depth 1); one that differs is refused
    code, _, err = run_cli(["eval", "--checkpoint", str(spikformer_run), "--depth", "1", "--eval-output",
                            str(tmp_path / "again")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["eval", "--checkpoint", str(spikformer_run), "--depth", "2"], capsys)
    assert code == 2 and "depth=2 (checkpoint: 1)" in err
    # a resume that asks for another model, or another size, is refused naming what differs
    code, _, err = run_cli(["train", "--resume", str(spikformer_run), "--model", "sdt"], capsys)
    assert code == 2 and "model='sdt' (run: 'spikformer_cifar')" in err
    code, _, err = run_cli(["train", "--resume", str(spikformer_run), "--depth", "2"], capsys)
    assert code == 2 and "depth=2 (run: 1)" in err
    # its weights offered to another architecture: one sentence naming both
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--resume", str(spikformer_run / "last.pth.tar"),
                            "--no-resume-opt", "--output", str(tmp_path / "other")], capsys)
    assert code == 2 and "holds a spikformer_cifar model (spikformer)" in err and "is sdt" in err
    assert "Traceback" not in err
