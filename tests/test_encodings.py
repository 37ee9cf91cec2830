"""Input encodings: each one's frames on hand-computed cases, the per-sample draws (workers, batch size, CPU
reference), the config's vocabulary and errors, the training-only option, the operation counter's binary first
layer, a plug-in, and a checkpoint whose evaluation re-applies its encoding."""

import itertools
import math

import pytest
import torch
from torch import nn

from spikedriven.analysis.operations import OperationCounter
from spikedriven.config import add_config_flags, from_mapping, load_config, overrides_from_args
from spikedriven.data import build_datasets, build_eval_loader, build_train_loader
from spikedriven.encodings import ENCODINGS, EVAL_EPOCH, build_encoder, encoding_class, hashed_uniforms
from spikedriven.errors import ConfigError

from helpers import DEMO, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

# the demo at a size whose forward takes milliseconds
TINY = {"embed_dim": 16, "num_heads": 2, "workers": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def digits():
    """The demo's training and evaluation sets, read once (the first read imports scikit-learn: seconds)."""
    return build_datasets(demo())


def demo(**values):
    return load_config(DEMO, {**TINY, **values})


def encoder(name, time_steps=3, mean=(0.5,), std=(0.5,), seed=0, **settings):
    return encoding_class(name)(settings, time_steps=time_steps, mean=mean, std=std, seed=seed)


# ------------------------------------------------------------------ each encoding


def test_direct_leaves_the_image_for_the_model_to_repeat():
    images = torch.randn(2, 3, 4, 4)
    assert encoder("direct")(images) is images
    assert not ENCODINGS["direct"].binary and build_encoder(demo(), training=True) is None


@pytest.mark.parametrize("name", ["simple_poisson", "rate", "latency"])
def test_spiking_encodings_give_binary_frames_over_t(name):
    frames = encoder(name, time_steps=5)(torch.randn(2, 3, 4, 4))
    assert frames.shape == (2, 5, 3, 4, 4) and frames.dtype == torch.float32
    assert set(frames.unique().tolist()) <= {0.0, 1.0} and ENCODINGS[name].binary


def test_simple_poisson_fires_where_the_draw_is_at_most_the_sigmoid():
    # x = 0: r = sigmoid(0) = 0.5 exactly; the study's rule is U <= r, so U = 0.5 fires and 0.5 + 2^-24 does not
    images = torch.zeros(1, 1, 1, 3)
    uniforms = torch.tensor([0.5, 0.5 - 2**-24, 0.5 + 2**-24]).view(1, 1, 1, 1, 3)
    frames = encoder("simple_poisson", time_steps=1).encode(images, uniforms)
    assert frames.flatten().tolist() == [1.0, 1.0, 0.0]


def test_rate_fires_below_gain_times_the_intensity():
    # mean 0.5, std 0.5: x = 0 is intensity 0.5, x = 1 intensity 1, x = -1 intensity 0; gain 1.5: p = 0.75, 1, 0
    images = torch.tensor([0.0, 0.0, 1.0, -1.0]).view(1, 1, 1, 4)
    uniforms = torch.tensor([0.75 - 2**-24, 0.75, 1 - 2**-24, 0.0]).view(1, 1, 1, 1, 4)
    frames = encoder("rate", time_steps=1, gain=1.5).encode(images, uniforms)
    assert frames.flatten().tolist() == [1.0, 0.0, 1.0, 0.0]


def test_latency_fires_once_brighter_earlier():
    # T = 5: step round((1 - I) x 4): I = 1 at 0, 0.5 at 2, 0.375 at round(2.5) = 2 (halves to even), 0 never
    images = torch.tensor([1.0, 0.5, 0.375, 0.0]).view(1, 1, 1, 4)
    frames = encoder("latency", time_steps=5, mean=(0.0,), std=(1.0,))(images)
    assert frames[0, :, 0, 0].T.tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    silent = encoder("latency", time_steps=5, mean=(0.0,), std=(1.0,), threshold=0.4)(images)
    assert silent[0, :, 0, 0].sum(0).tolist() == [1, 1, 0, 0]


# ------------------------------------------------------------------ the draws


def _fmix(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _reference_uniform(seed: int, epoch: int, index: int, element: int) -> float:
    """The hash in Python's unbounded integers: what the int64 tensor code must equal bit for bit."""
    h = 0
    for value in (seed, epoch, index):
        value &= 2**64 - 1
        h = _fmix(h ^ (value & 0xFFFFFFFF))
        h = _fmix(h ^ (value >> 32))
    x = _fmix((h + element * 0x9E3779B9) & 0xFFFFFFFF)
    return (x >> 8) * 2.0**-24


def test_the_draws_are_the_reference_hash_of_seed_epoch_index_and_element():
    keys = torch.tensor([[3, 7], [EVAL_EPOCH, 2**40 + 5]])
    uniforms = hashed_uniforms(2**33 + 42, keys, (2, 2, 3))
    expected = [[_reference_uniform(2**33 + 42, int(e), int(i), k) for k in range(6)] for e, i in keys.tolist()]
    assert uniforms.flatten(1).tolist() == expected


def test_simple_poisson_fires_at_the_sigmoid_of_the_pixel():
    # 8 x 10 x 3 x 16 x 16 = 61,440 independent draws per value: the frequency's standard deviation is at most
    # sqrt(0.25 / 61440) = 0.002, so 0.01 is five of them (a false failure about once in 3 million runs)
    for x in (-1.0, 0.4):
        images = torch.full((8, 3, 16, 16), x)
        keys = torch.stack([torch.zeros(8, dtype=torch.long), torch.arange(8)], dim=1)
        frames = encoder("simple_poisson", time_steps=10, seed=1)(images, keys)
        assert abs(frames.mean().item() - 1 / (1 + math.exp(-x))) < 0.01


def _encoded(cfg, train, workers=0, batches=2):
    loader = build_train_loader(cfg, train, workers=workers)
    loader.sampler.set_epoch(3)
    encode = build_encoder(cfg, training=True)
    out = [(encode(images, keys, 3), keys) for images, _, keys in itertools.islice(loader, batches)]
    return torch.cat([frames for frames, _ in out]), torch.cat([keys for _, keys in out])


def test_draws_are_the_same_with_any_workers_and_batch_size(digits):
    cfg, train = demo(encoding="simple_poisson", batch_size=4), digits.train
    frames, keys = _encoded(cfg, train)
    assert keys[:, 0].eq(3).all() and keys[:, 1].unique().numel() == 8
    assert torch.equal(_encoded(cfg, train, workers=2)[0], frames)
    # a batch of 2 takes the epoch's samples in the same order: each sample draws the same spikes
    halves, half_keys = _encoded(demo(encoding="simple_poisson", batch_size=2), train, batches=4)
    assert torch.equal(half_keys, keys) and torch.equal(halves, frames)


def test_samples_without_keys_are_keyed_by_their_pixels():
    images = torch.randn(4, 3, 8, 8)
    encode = encoder("rate")
    both = encode(images)
    assert torch.equal(encode(images[2:]), both[2:])  # the same sample, the same spikes, in any batch
    assert not torch.equal(encode(images, epoch=1), both)


# ------------------------------------------------------------------ config


def test_encoding_is_a_config_key_and_a_flag():
    import argparse

    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(["--encoding", "rate", "--encoding-args", "gain=2", "--encode-eval", "false"])
    cfg = load_config(DEMO, overrides_from_args(args))
    assert (cfg.encoding, cfg.encoding_args, cfg.encode_eval) == ("rate", {"gain": 2.0}, False)
    assert cfg.encoding_settings() == {"gain": 2.0}
    # a config shared by several encodings (a study's --vary encoding=...) keeps each one's settings apart
    shared = load_config(DEMO, {"encoding": "latency",
                                "encodings": {"rate": {"gain": 2}, "latency": {"threshold": 0.2}}})
    assert shared.encoding_settings() == {"threshold": 0.2}


@pytest.mark.parametrize("values, words", [
    ({"encoding": "poison"}, ["unknown encoding 'poison'", "direct, latency, rate, simple_poisson"]),
    ({"encoding": "rate", "encoding_args": {"gian": 2}},
     ["encoding 'rate' takes no setting gian", "its settings are gain"]),
    ({"encoding": "rate", "encoding_args": {"gain": -1}}, ["encoding 'rate': gain must be >= 0"]),
    ({"encoding": "latency", "encoding_args": {"threshold": "x"}}, ["threshold must be a number"]),
    ({"encoding": "rate", "dataset": "cifar10-dvs", "in_chans": 2}, ["serves event frames already"]),
    ({"encoder_type": "poisson"}, ["encoder_type: 'poisson' is not implemented", "could not run"]),
])
def test_bad_encodings_are_refused_in_one_sentence(values, words):
    with pytest.raises(ConfigError) as caught:
        from_mapping(values, source="test")
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_an_unknown_encoding_exits_2_on_the_command_line(capsys):
    code, _, err = run_cli(["train", "-c", DEMO, "--encoding", "poison"], capsys)
    assert code == 2 and "the registered encodings are direct" in err


def test_the_study_encoder_type_is_read_and_its_evaluation_noted(warnings_seen):
    assert from_mapping({"encoder_type": "none"}, source="study none").encoding == "direct"
    cfg = from_mapping({"encoder_type": "simple_poisson"}, source="study file")
    assert (cfg.encoding, cfg.encode_eval) == ("simple_poisson", True)
    assert any("encode_eval: false reproduces that" in line for line in warnings_seen())
    quiet = from_mapping({"encoder_type": "simple_poisson", "encode_eval": False}, source="study file, faithful")
    assert not quiet.encode_eval and not any("faithful" in line for line in warnings_seen())


# ------------------------------------------------------------------ the engine


class Spy(nn.Module):
    """Logits from the mean of the input, and what each forward received."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append((x.dim(), set(x.unique().tolist()) <= {0.0, 1.0}))
        return self.head(x.flatten(1).mean(1, keepdim=True))


@pytest.mark.parametrize("encode_eval", [False, True])
def test_training_sees_spikes_and_evaluation_as_configured(encode_eval, digits):
    from spikedriven.engine.loop import StepOptions, evaluate, train_one_epoch

    cfg = demo(encoding="simple_poisson", encode_eval=encode_eval, batch_size=8, val_batch_size=64)
    train = build_train_loader(cfg, digits.train)
    train.sampler.set_epoch(0)
    model = Spy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, itertools.islice(train, 2), optimizer, nn.functional.cross_entropy, StepOptions(),
                    epoch=0, encoder=build_encoder(cfg, training=True))
    assert model.seen == [(5, True)] * 2
    model.seen.clear()
    evaluate(model, itertools.islice(build_eval_loader(cfg, digits.eval), 1), torch.device("cpu"),
             encoder=build_encoder(cfg, training=False))
    assert model.seen == [(5, True) if encode_eval else (4, False)]


def test_the_model_trains_two_steps_on_rate_coded_digits(digits):
    from spikedriven.engine.loop import StepOptions, train_one_epoch
    from spikedriven.models import build_model

    cfg = demo(encoding="rate", batch_size=16)
    loader = build_train_loader(cfg, digits.train)
    loader.sampler.set_epoch(0)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    stats = train_one_epoch(model, itertools.islice(loader, 2), optimizer, nn.functional.cross_entropy,
                            StepOptions(), epoch=0, encoder=build_encoder(cfg, training=True))
    assert stats["images"] == 32 and math.isfinite(stats["train_loss"])


# ------------------------------------------------------------------ operations and energy


def test_a_binary_first_layer_counts_accumulates():
    from spikedriven.models import build_model

    cfg = demo(encoding="latency", time_steps=4)
    model = build_model(cfg).eval()
    conv = model.patch_embed.proj_conv
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (3, 2, (3, 3), (1, 1))
    macs = 16 * 16 * 2 * 3 * 3 * 3  # per step: 16 x 16 outputs x 2 channels x (3 inputs x 3 x 3)
    # intensity 0.5 everywhere: every pixel fires exactly once in T = 4 steps, so fr_in = 1/4, SOPs = 1/4 x 4 x MACs
    frames = build_encoder(cfg, training=False)(torch.zeros(2, 3, 16, 16))
    with torch.no_grad(), OperationCounter(model, input_spikes=True) as counter:
        model(frames)
    first = counter.stats["patch_embed.proj_conv"]
    assert counter.input_layer == "patch_embed.proj_conv" and first.kind == "AC"
    assert first.input_rate() == 0.25 and first.ops_per_image() == macs
    # the analogue image: T x MACs, as before
    with torch.no_grad(), OperationCounter(model) as counter:
        model(torch.zeros(2, 3, 16, 16) + 0.3)
    assert counter.stats["patch_embed.proj_conv"].kind == "MAC"
    assert counter.stats["patch_embed.proj_conv"].ops_per_image() == 4 * macs
    with pytest.raises(ValueError, match="binary frames of its encoding"), torch.no_grad(), \
            OperationCounter(model, input_spikes=True):
        model(torch.zeros(2, 3, 16, 16) + 0.3)


def test_a_checkpoint_evaluates_with_its_encoding(tmp_path):
    from spikedriven.analysis.evaluation import evaluate_checkpoint
    from spikedriven.engine.checkpoint import save_checkpoint
    from spikedriven.models import build_model

    cfg = demo(encoding="rate", val_batch_size=360)
    path = save_checkpoint(tmp_path / "last.pth.tar", {"epoch": 1, "state_dict": build_model(cfg).state_dict(),
                                                       "config": cfg.to_dict(), "model_args": cfg.model_kwargs()})
    result, _ = evaluate_checkpoint(path, output=tmp_path / "eval")
    assert result["input"]["binary"] and result["input"]["kind"] == "AC"
    assert result["input"]["line"].startswith("first layer (patch_embed.proj_conv): binary spikes from the rate")
    assert result["layers"][0]["kind"] == "AC"
    with pytest.raises(ConfigError, match="encode_eval"):  # evaluating otherwise is an override, named as such
        evaluate_checkpoint(path, overrides={"encode_eval": "false"}, output=tmp_path / "other")


# ------------------------------------------------------------------ plug-ins


def test_an_encoding_of_ones_own_registers_as_a_plugin(tmp_path):
    from spikedriven.plugins import load_plugins

    plugin = tmp_path / "my_encodings.py"
    plugin.write_text(
        "from spikedriven.encodings import Encoding, register_encoding\n"
        "from spikedriven.neurons import Param\n\n"
        "@register_encoding\n"
        "class Inverted(Encoding):\n"
        "    name, title = 'inverted', 'the negated image at every step'\n"
        "    params = {'scale': Param(1.0, 'a factor')}\n\n"
        "    def encode(self, images, uniforms):\n"
        "        return -self.scale * images\n"
    )
    try:
        load_plugins([str(plugin)])
        cfg = demo(plugins=[str(plugin)], encoding="inverted", encoding_args={"scale": 2})
        assert torch.equal(build_encoder(cfg, training=True)(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 2, 2), -2.0))
    finally:
        ENCODINGS.pop("inverted", None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_draws_the_cpus_spikes():
    images, keys = torch.randn(4, 3, 8, 8), torch.tensor([[0, 1], [0, 2], [5, 3], [EVAL_EPOCH, 9]])
    for name in ("simple_poisson", "rate"):
        encode = encoder(name, time_steps=4, seed=7)
        assert torch.equal(encode(images.cuda(), keys.cuda()).cpu(), encode(images, keys))
        assert torch.equal(encode(images.cuda()).cpu(), encode(images))  # keyed by their pixels
