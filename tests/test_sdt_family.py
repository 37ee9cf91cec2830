"""What SDT-V2 and SDT-V3 brought beside their models (whose equality with a reference is tests/test_sdt_v2.py
and tests/test_sdt_v3.py): the multi-level neuron's rounding and gradient window, V3's default neuron, V2's
distillation head and its teacher, the recipes under conf/sdt-v2 and conf/sdt-v3, and their bad input."""

import math
from pathlib import Path

import pytest
import timm
import torch

import spikedriven  # noqa: F401  (registers the models with timm)
from spikedriven.config import load_config
from spikedriven.engine.loop import DistillationLoss
from spikedriven.engine.recipe import build_optimizer_and_scheduler
from spikedriven.errors import ConfigError
from spikedriven.models import build_model
from spikedriven.neurons import NeuronSpec, SpikingNeuron, create_neuron

from helpers import DEMO, run_cli

ROOT = Path(__file__).resolve().parents[1]
V2_SMALL = dict(embed_dims=[8, 16, 16, 16], num_heads=2, depths=[1, 1], img_size=32, num_classes=5)


# ------------------------------------------------------------------ the multi-level neuron's settings

TIES = torch.tensor([-0.5, 0.0, 0.25, 0.5, 1.5, 2.5, 3.5, 4.0, 4.5])


@pytest.mark.parametrize("rounding, window, counts, passes", [
    # today's default: floor(x + 1/2), the gradient where 0 < x < 4
    ("half_up", "open", [0, 0, 0, 1, 2, 3, 4, 4, 4], [0, 0, 1, 1, 1, 1, 1, 0, 0]),
    # E-SpikeFormer's: torch.round (half to even), the gradient where 0 <= x <= 4
    ("half_even", "closed", [0, 0, 0, 0, 2, 2, 4, 4, 4], [0, 1, 1, 1, 1, 1, 1, 1, 0]),
    ("half_even", "open", [0, 0, 0, 0, 2, 2, 4, 4, 4], [0, 0, 1, 1, 1, 1, 1, 0, 0]),
])
def test_multispike_rounds_ties_and_passes_its_gradient_as_set(rounding, window, counts, passes):
    neuron = create_neuron(NeuronSpec("multispike", rounding=rounding, gradient_window=window))
    x = TIES.clone().requires_grad_(True)
    y = neuron(x.unsqueeze(0))[0]
    y.sum().backward()
    assert (y * 4).tolist() == counts
    assert (x.grad * 4).tolist() == passes  # the gradient of k / 4 is 1/4 inside the window


def test_multispike_keeps_its_former_behaviour_by_default():
    assert create_neuron(NeuronSpec("multispike")).spec.params == {
        "levels": 4, "rounding": "half_up", "gradient_window": "open"}


def test_a_rounding_it_does_not_know_is_one_sentence(capsys):
    code, _, err = run_cli(["train", "-c", DEMO, "--spike-mode", "multispike", "--rounding", "up"], capsys)
    assert code == 2 and "rounding must be one of half_up, half_even" in err and "Traceback" not in err


# ------------------------------------------------------------------ SDT-V3's neuron


def test_v3_runs_its_original_neuron_unless_another_is_given():
    model = timm.create_model("efficient_spiking_transformer_t", **V2_SMALL)
    modes = {m.spec for m in model.modules() if isinstance(m, SpikingNeuron)}
    assert modes == {NeuronSpec("multispike", levels=4, rounding="half_even", gradient_window="closed")}
    lif = timm.create_model("efficient_spiking_transformer_t", spike_mode="lif", **V2_SMALL)
    assert {m.name for m in lif.modules() if isinstance(m, SpikingNeuron)} == {"lif"}


def test_v3s_head_reads_the_head_neurons_counts():
    """The original's MultiSpike(Norm=1) before the classifier: the integer k, where every other neuron of the
    model gives k / 4; a feature map averaging 2.5 is a tie, rounded to the even 2."""
    model = timm.create_model("efficient_spiking_transformer_t", **V2_SMALL)
    features = torch.tensor([2.5, 3.5, 0.3, 9.0]).repeat_interleave(4).reshape(1, 1, 16, 1, 1).expand(1, 2, 16, 2, 2)
    counts = model.head_input(features)
    assert counts[0, 0].tolist() == [2.0] * 4 + [4.0] * 4 + [0.0] * 4 + [4.0] * 4


# ------------------------------------------------------------------ SDT-V2's distillation head


def test_a_kd_model_returns_both_heads_in_training_and_their_mean_in_evaluation():
    torch.manual_seed(0)
    # a low threshold over 2 steps: spikes reach the heads
    model = timm.create_model("metaspikformer_8_384", kd=True, spike_mode="if_soft", v_threshold=0.05, time_steps=2,
                              **V2_SMALL)
    x = torch.randn(3, 3, 32, 32) * 3
    logits, distilled = model.train()(x)
    assert logits.shape == distilled.shape == (3, 5) and not torch.equal(logits, distilled)
    model.eval()
    with torch.no_grad():
        s = model.head_input(model.forward_features(x))
        expected = (model.head(s).mean(0) + model.head_kd(s).mean(0)) / 2
        assert torch.equal(model(x), expected)
    model.reset_classifier(7)
    assert model.head_kd.out_features == 7 and model.train()(x)[1].shape == (3, 7)


def test_the_distillation_loss_is_deits_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    distilled = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 2.0]])
    teacher_logits = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    teacher = lambda images: teacher_logits  # noqa: E731
    target = torch.tensor([0, 1])

    def ce(z, label):
        return float(torch.logsumexp(z, 0) - z[label])

    label_loss = (ce(logits[0], 0) + ce(logits[1], 1)) / 2
    hard = DistillationLoss(torch.nn.CrossEntropyLoss(), teacher, "hard", 0.5, 1.0)
    by_hand = 0.5 * label_loss + 0.5 * (ce(distilled[0], 1) + ce(distilled[1], 2)) / 2
    assert hard((logits, distilled), target, None).item() == pytest.approx(by_hand, rel=1e-6)

    tau = 2.0
    p_teacher = torch.softmax(teacher_logits / tau, 1)
    kl = float((p_teacher * (p_teacher.log() - torch.log_softmax(distilled / tau, 1))).sum())
    soft = DistillationLoss(torch.nn.CrossEntropyLoss(), teacher, "soft", 0.25, tau)
    by_hand = 0.75 * label_loss + 0.25 * kl * tau * tau / distilled.numel()
    assert soft((logits, distilled), target, None).item() == pytest.approx(by_hand, rel=1e-6)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "resnet10t.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=10).state_dict(), path)
    return path


V2_DEMO = ["--model", "metaspikformer_8_384", "--embed-dims", "8,16,16,16", "--num-heads", "2", "--epochs", "1",
           "--warmup-epochs", "0", "--cooldown-epochs", "0", "--workers", "0", "--device", "cpu", "--time-steps", "1",
           "--batch-size", "128"]


def test_a_kd_model_distils_from_a_teacher_starting_from_weights_without_head_kd(teacher_file, tmp_path, capsys):
    """SDT-V2's two stages: a run without kd, then a distillation fine-tune from its weights (head_kd, which they
    lack, keeps its initialisation; every other weight is loaded), evaluated without the teacher."""
    code, _, err = run_cli(["train", "-c", DEMO, *V2_DEMO, "--output", str(tmp_path / "t1")], capsys)
    assert code == 0, err
    first = torch.load(tmp_path / "t1" / "last.pth.tar", weights_only=False)["state_dict"]
    code, out, err = run_cli(["train", "-c", DEMO, *V2_DEMO, "--kd", "true", "--teacher", "resnet10t",
                              "--teacher-checkpoint", str(teacher_file),
                              "--lr", "1e-12", "--min-lr", "1e-12", "--resume", str(tmp_path / "t1" / "last.pth.tar"),
                              "--no-resume-opt", "--output", str(tmp_path / "kd")], capsys)
    assert code == 0, err
    distilled = torch.load(tmp_path / "kd" / "last.pth.tar", weights_only=False)["state_dict"]
    assert set(distilled) == set(first) | {"head_kd.weight", "head_kd.bias"}
    # at an lr of 1e-12 the weights stay the first run's (batch-norm statistics move with the new batches)
    assert all(torch.allclose(distilled[k], first[k], atol=1e-6) for k in first if "running" not in k and "num_batches" not in k)
    code, out, err = run_cli(["eval", "--checkpoint", str(tmp_path / "kd")], capsys)  # no teacher needed
    assert code == 0, err
    # anywhere else loading stays strict: the first run's weights do not fit a kd model for evaluation
    from spikedriven.engine.checkpoint import load_checkpoint
    from spikedriven.errors import CheckpointError

    kd_model = build_model(load_config(DEMO, {"model": "metaspikformer_8_384", "embed_dims": [8, 16, 16, 16],
                                              "num_heads": 2, "kd": True, "time_steps": 1}))
    with pytest.raises(CheckpointError, match="missing keys: head_kd"):
        load_checkpoint(kd_model, tmp_path / "t1" / "last.pth.tar")


def test_the_schedule_per_step_after_a_warmup_prefix_is_the_mae_recipes():
    """lr(e) at the fractional epoch e = step / steps_per_epoch: lr e / warmup during the warm-up from 0, then
    min_lr + (lr - min_lr)(1 + cos(pi (e - warmup) / (epochs - warmup))) / 2 (SPEC-architectures 2.8)."""
    cfg = load_config(DEMO, {"lr": 1.0, "min_lr": 0.01, "warmup_lr": 0.0, "warmup_epochs": 2, "epochs": 6,
                             "cooldown_epochs": 0, "warmup_prefix": True, "sched_on_updates": True})
    optimizer, scheduler, total = build_optimizer_and_scheduler(cfg, torch.nn.Linear(2, 2), updates_per_epoch=5)
    assert total == 6
    for update in range(30):
        scheduler.step_update(update)
        e = update / 5
        expected = e / 2 if e < 2 else 0.01 + 0.99 * (1 + math.cos(math.pi * (e - 2) / 4)) / 2
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-12), update
    cfg = load_config(DEMO, {"lr": 1.0, "min_lr": 0.0, "warmup_epochs": 1, "epochs": 4, "cooldown_epochs": 0})
    optimizer, scheduler, _ = build_optimizer_and_scheduler(cfg, torch.nn.Linear(2, 2), updates_per_epoch=5)
    scheduler.step(2)  # the study's: once per epoch, the cosine on the absolute epoch
    assert optimizer.param_groups[0]["lr"] == pytest.approx((1 + math.cos(math.pi * 2 / 4)) / 2)


def test_a_run_sets_the_lr_at_every_step(tmp_path, capsys, monkeypatch):
    from spikedriven.engine import loop

    seen = []
    real = loop.train_one_epoch

    def spy(model, batches, optimizer, *args, on_step=None, **kwargs):
        def record(step):
            on_step(step)
            seen.append(optimizer.param_groups[0]["lr"])
        return real(model, batches, optimizer, *args, on_step=record, **kwargs)

    monkeypatch.setattr("spikedriven.engine.trainer.train_one_epoch", spy)
    code, _, err = run_cli(["train", "-c", DEMO, *V2_DEMO, "--epochs", "2", "--warmup-epochs", "1", "--warmup-lr", "0",
                            "--warmup-prefix", "true", "--sched-on-updates", "true", "--output", str(tmp_path / "r")],
                           capsys)
    assert code == 0, err
    steps = len(seen) // 2  # 1,437 digits in full batches of 128: 11 steps an epoch; seen[u - 1]: the lr after update u
    assert steps == 11 and seen[:3] == pytest.approx([3e-3 * u / steps for u in (1, 2, 3)])
    assert seen[steps - 1] == pytest.approx(3e-3)  # the warm-up's end; then the cosine over the one epoch left
    assert seen[steps + 5] == pytest.approx(1e-5 + (3e-3 - 1e-5) * (1 + math.cos(math.pi * 6 / steps)) / 2)


@pytest.mark.parametrize("flags, words", [
    (["--kd", "true"], ["distillation head", "teacher_checkpoint"]),
    (["--teacher", "resnet10t", "--teacher-checkpoint", "TEACHER"], ["model sdt has none", "kd: true"]),
    (["--teacher", "resnet10t"], ["both teacher", "nothing is downloaded"]),
    (["--kd", "true", "--teacher", "no_such_net", "--teacher-checkpoint", "TEACHER"], ["not a timm model name"]),
    (["--kd", "true", "--teacher", "resnet10t", "--teacher-checkpoint", "MISSING"], ["does not exist"]),
    (["--kd", "true", "--teacher", "resnet18", "--teacher-checkpoint", "TEACHER"], ["cannot load"]),
])
def test_distillation_without_what_it_needs_is_one_sentence(teacher_file, tmp_path, capsys, flags, words):
    flags = [str(teacher_file) if f == "TEACHER" else str(tmp_path / "none.pth") if f == "MISSING" else f
             for f in flags]
    model = [] if "--kd" not in flags else V2_DEMO
    code, _, err = run_cli(["train", "-c", DEMO, *model, *flags, "--output", str(tmp_path / "run")], capsys)
    assert code == 2 and "Traceback" not in err
    assert all(word in err for word in words), err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the recipes

RECIPES = sorted((ROOT / "conf").glob("sdt-v[23]/*.yml"))


def test_both_families_have_imagenet_and_cifar_recipes():
    names = {path.parent.name + "/" + path.name.split("_")[0] for path in RECIPES}
    assert names == {"sdt-v2/imagenet", "sdt-v2/cifar10", "sdt-v3/imagenet", "sdt-v3/cifar10"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_recipe_builds_its_model_and_optimizer(path):
    cfg = load_config(str(path), {})
    with torch.device("meta"):
        model = build_model(cfg)
    assert type(model).__name__ == ("MetaSpikeFormer" if "v2" in path.parent.name else "EfficientSpikingTransformer")
    text = path.read_text()
    if "cifar10" in path.name:
        assert "OUR recipe" in text and cfg.img_size == 32  # ours, and marked so
        return
    assert cfg.opt == "lamb" and cfg.opt_kwargs == {"trust_clip": True} and cfg.weight_decay == 0.05
    assert cfg.reprob == 0.25 and cfg.remode == "pixel" and cfg.aa == "rand-m9-mstd0.5-inc1" and cfg.mixup == 0
    optimizer, _, _ = build_optimizer_and_scheduler(cfg, build_model(load_config(DEMO, {"model": cfg.model, **(
        {"embed_dims": [8, 16, 16, 16], "num_heads": 2})})), updates_per_epoch=10)
    assert type(optimizer).__name__ == "Lamb" and optimizer.defaults["trust_clip"]
    assert optimizer.defaults["max_grad_norm"] == 1.0 and optimizer.defaults["eps"] == 1e-6
    assert cfg.warmup_prefix and cfg.sched_on_updates and cfg.warmup_lr == 0 and cfg.min_lr == 1e-6
    if "v3" in path.parent.name:
        assert cfg.time_steps == 1 and cfg.neuron_spec() == NeuronSpec(
            "multispike", levels=4, rounding="half_even", gradient_window="closed")


def test_an_optimizer_keyword_it_does_not_take_is_one_sentence(capsys, tmp_path):
    code, _, err = run_cli(["train", "-c", DEMO, "--opt-kwargs", "no_such=1", "--output", str(tmp_path / "r")], capsys)
    assert code == 2 and "opt_kwargs" in err and "no_such" in err and "Traceback" not in err


def test_stage_widths_and_depths_that_do_not_fit_are_one_sentence():
    for given, words in (({"embed_dims": [8, 16, 32]}, "4 stage widths"),
                         ({"embed_dims": [8, 16, 30, 32], "num_heads": 4}, "stage 3's width 30"),
                         ({"embed_dims": [7, 16, 32, 32]}, "even first width"),
                         ({"depths": [1, 1, 1]}, "stages 3 and 4")):
        with pytest.raises(ConfigError, match=words):
            load_config(DEMO, {"model": "metaspikformer_8_384", **given})


def test_a_config_gives_each_neuron_its_own_settings_so_a_study_of_several_shares_it(capsys, tmp_path):
    """SDT-V3's recipe names its multi-level neuron's settings under neurons:, which a LIF run of the same file
    (a study's --modes lif,multispike) leaves aside; neuron_args still applies over the entry."""
    path = str(ROOT / "conf/sdt-v3/cifar10_s_300E.yml")
    assert load_config(path, {"spike_mode": "lif"}).neuron_spec().mode == "lif"
    assert load_config(path, {"neuron_args": ["rounding=half_up"]}).neuron_spec() == NeuronSpec(
        "multispike", levels=4, rounding="half_up", gradient_window="closed")
    code, out, err = run_cli(["study", "-c", path, "--modes", "lif,multispike", "--seeds", "1", "--dry-run",
                              "--study-dir", str(tmp_path / "s")], capsys)
    assert code == 0, err
    assert "efficient_spiking_transformer_s-lif-uth1-seed42" in out and "efficient_spiking_transformer_s-multispike" in out
    for neurons, words in (({"no_such": {}}, "neurons: no_such"), ({"multispike": {"rounding": "up"}}, "rounding must be"),
                           ({"lif": {"levels": 4}}, "takes no setting levels")):
        config = tmp_path / "c.yml"
        config.write_text(f"model: efficient_spiking_transformer_t\nneurons: {neurons!r}\n".replace("'", '"'))
        with pytest.raises(ConfigError, match=words):
            load_config(str(config), {})
