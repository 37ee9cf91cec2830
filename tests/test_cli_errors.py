"""Bad input: one clear sentence on stderr and exit status 2, never a traceback."""

import pickle
from pathlib import Path

import pytest

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.testing import write_fake_cifar

from helpers import TINY_RUN, run_cli

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf/cifar10/2_256_300E_t4.yml")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def data(tmp_path):
    return str(write_fake_cifar(tmp_path / "data", n_train=20, n_test=10))


CLASH = (
    "from spikedriven.neurons import ThresholdNeuron, register_neuron\n"
    "@register_neuron\n"
    "class Mine(ThresholdNeuron):\n"
    "    name = 'lif'\n"
)

CASES = [
    # (id, extra args or a callable(tmp_path, data) -> args, words expected in the message)
    ("refused original key", lambda t, d: ["-c", write(t, "a.yml", "model-ema: true\n")], ["model-ema", "not implemented"]),
    ("typo key", lambda t, d: ["-c", write(t, "a.yml", "batch_sise: 8\n")], ["batch_sise", "batch_size"]),
    ("wrong type", lambda t, d: ["-c", write(t, "a.yml", "epochs: many\n")], ["epochs", "integer"]),
    ("bad bool", lambda t, d: ["-c", CONF, "--tet", "maybe"], ["tet", "true or false"]),
    ("malformed yaml", lambda t, d: ["-c", write(t, "a.yml", "dim: [1, 2\n")], ["not valid YAML", "line"]),
    ("yaml not a mapping", lambda t, d: ["-c", write(t, "a.yml", "- a\n- b\n")], ["mapping"]),
    ("missing config", lambda t, d: ["-c", str(t / "nope.yml")], ["does not exist"]),
    ("dim vs heads", lambda t, d: ["-c", CONF, "--embed-dim", "40", "--num-heads", "3"], ["not divisible by num_heads"]),
    ("T < 1", lambda t, d: ["-c", CONF, "--time-steps", "0"], ["time_steps"]),
    ("pooling_stat", lambda t, d: ["-c", CONF, "--pooling-stat", "00112"], ["pooling_stat"]),
    ("spike mode", lambda t, d: ["-c", CONF, "--spike-mode", "lif2"], ["unknown spike mode 'lif2'", "if, if_soft, if_learnable, lif", "--plugins"]),
    ("surrogate", lambda t, d: ["-c", CONF, "--surrogate", "relu"], ["surrogate", "sigmoid"]),
    ("threshold", lambda t, d: ["-c", CONF, "--v-threshold", "-1"], ["v_threshold"]),
    ("soft reset with v_reset", lambda t, d: ["-c", CONF, "--spike-mode", "if_soft", "--v-reset", "0"], ["'if_soft' takes no v_reset"]),
    ("tau with IF", lambda t, d: ["-c", CONF, "--spike-mode", "if", "--tau", "3"], ["'if' takes no tau (given 3.0)", "v_reset"]),
    ("levels with LIF", lambda t, d: ["-c", CONF, "--levels", "8"], ["'lif' takes no setting levels"]),
    ("levels out of range", lambda t, d: ["-c", CONF, "--spike-mode", "multispike", "--levels", "300"], ["levels", "1 .. 255"]),
    ("bad neuron args", lambda t, d: ["-c", CONF, "--neuron-args", "levels"], ["neuron_args", "key=value"]),
    ("plugin missing", lambda t, d: ["-c", CONF, "--plugins", str(t / "nope.py")], ["plugin", "nope.py", "does not exist"]),
    ("plugin not a module", lambda t, d: ["-c", CONF, "--plugins", "no_such_module_here"], ["neither a .py file nor an importable module"]),
    ("plugin fails to import", lambda t, d: ["-c", CONF, "--plugins", write(t, "broken.py", "import math\nraise RuntimeError('half written')\n")], ["broken.py failed to import", "RuntimeError: half written"]),
    ("plugin registers nothing", lambda t, d: ["-c", CONF, "--plugins", write(t, "empty.py", "X = 1\n")], ["registered no neuron", "@register_neuron"]),
    ("plugin takes a built-in name", lambda t, d: ["-c", CONF, "--plugins", write(t, "clash.py", CLASH)], ["named 'lif' is registered already"]),
    ("missing dataset", lambda t, d: ["-c", CONF, "--data-dir", str(t / "empty"), *TINY_RUN], ["dataset not found", "cifar-10-batches-py", "--download"]),
    ("partial dataset", lambda t, d: ["-c", CONF, "--data-dir", _drop(d, "data_batch_3"), *TINY_RUN], ["missing: data_batch_3"]),
    ("corrupt pickle", lambda t, d: ["-c", CONF, "--data-dir", _corrupt(d), *TINY_RUN], ["test_batch", "not a readable CIFAR pickle"]),
    ("wrong classes", lambda t, d: ["-c", CONF, "--data-dir", d, "--num-classes", "100", *TINY_RUN], ["10 classes"]),
    ("batch larger than data", lambda t, d: ["-c", CONF, "--data-dir", d, *TINY_RUN, "--batch-size", "64"], ["batch_size 64", "larger"]),
    ("odd batch with mixup", lambda t, d: ["-c", CONF, "--data-dir", d, *TINY_RUN, "--batch-size", "7"], ["even batch_size"]),
    ("unwritable output", lambda t, d: ["-c", CONF, "--data-dir", d, *TINY_RUN, "--output", "/proc/spikedriven-run"], ["not writable"]),
    ("unknown model", lambda t, d: ["-c", CONF, "--data-dir", d, *TINY_RUN, "--model", "resnet_sdt"], ["unknown model"]),
    ("unknown optimizer", lambda t, d: ["-c", CONF, "--data-dir", d, *TINY_RUN, "--opt", "adamx"], ["optimizer 'adamx'"]),
    ("resume missing file", lambda t, d: ["-c", CONF, "--resume", str(t / "x.pth.tar")], ["does not exist"]),
    ("resume auto without output", lambda t, d: ["-c", CONF, "--resume", "auto"], ["--output"]),
    ("val_size too large", lambda t, d: ["-c", CONF, "--data-dir", d, *TINY_RUN, "--val-size", "20"], ["val_size"]),
    ("cuda without gpu", lambda t, d: ["-c", CONF, "--data-dir", d, *TINY_RUN, "--device", "cuda"], ["no CUDA GPU"]),
]


def _drop(data_dir, name):
    (Path(data_dir) / "cifar-10-batches-py" / name).unlink()
    return data_dir


def _corrupt(data_dir):
    (Path(data_dir) / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04garbage")
    return data_dir


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_sentence_and_exit_2(case, tmp_path, data, capsys):
    _, make_args, words = case
    code, _, err = run_cli(["train", *make_args(tmp_path, data)], capsys)
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err, err


def test_missing_labels_key_is_named(tmp_path, capsys):
    data = write_fake_cifar(tmp_path / "d", n_train=20, n_test=10)
    path = data / "cifar-10-batches-py" / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({"data": b""}, f)
    code, _, err = run_cli(["train", "-c", CONF, "--data-dir", str(data), *TINY_RUN], capsys)
    assert code == 2 and "lacks 'data' or 'labels'" in err


# ---------------------------------------------------------------- checkpoints, eval, compare, study


@pytest.fixture
def ckpt(tmp_path, data):
    """A checkpoint of our format for a tiny if_soft model (no training needed)."""
    from spikedriven import save_checkpoint
    from spikedriven.models import build_model

    cfg = load_config(CONF, {"embed_dim": 32, "depth": 1, "time_steps": 2, "spike_mode": "if_soft", "data_dir": data, "workers": 0})
    path = save_checkpoint(tmp_path / "run" / "last.pth.tar",
                           {"state_dict": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 1})
    return str(path)


def _other_size_checkpoint(t, d, **changes):
    from spikedriven import save_checkpoint
    from spikedriven.models import build_model

    cfg = load_config(CONF, {"embed_dim": 32, "depth": 1, "time_steps": 2, **changes})
    model = build_model(cfg)
    return str(save_checkpoint(t / "other.pth.tar", {"state_dict": model.state_dict(), "epoch": 1}))


def _bytes_file(t, name, data):
    path = t / name
    path.write_bytes(data)
    return str(path)


def _truncated(c):
    data = Path(c).read_bytes()
    Path(c).write_bytes(data[: len(data) // 3])
    return c


CKPT_CASES = [
    ("eval unreadable file", lambda t, d, c: ["eval", "--checkpoint", _bytes_file(t, "x.pth.tar", b"\x00" * 100)], ["is not a PyTorch checkpoint"]),
    ("eval truncated", lambda t, d, c: ["eval", "--checkpoint", _truncated(c)], ["truncated"]),
    ("eval not a checkpoint", lambda t, d, c: ["eval", "--checkpoint", CONF], ["is not a PyTorch checkpoint (it is a text file)"]),
    ("eval missing checkpoint", lambda t, d, c: ["eval", "--checkpoint", str(t / "none.pth.tar")], ["does not exist"]),
    ("eval contradicting mode", lambda t, d, c: ["eval", "--checkpoint", c, "--spike-mode", "lif"], ["spike_mode='lif'", "--override"]),
    ("eval contradicting T", lambda t, d, c: ["eval", "--checkpoint", c, "--time-steps", "4"], ["time_steps=4"]),
    ("eval other size", lambda t, d, c: ["eval", "-c", CONF, "--checkpoint", _other_size_checkpoint(t, d, embed_dim=64), "--embed-dim", "32", "--depth", "1", "--time-steps", "2", "--data-dir", d], ["does not fit", "shape mismatches"]),
    ("eval other classes", lambda t, d, c: ["eval", "-c", CONF, "--checkpoint", _other_size_checkpoint(t, d, num_classes=100), "--embed-dim", "32", "--depth", "1", "--time-steps", "2", "--data-dir", d], ["head.weight (100, 32) vs model (10, 32)"]),
    ("eval val without split", lambda t, d, c: ["eval", "--checkpoint", c, "--split", "val"], ["val_size"]),
    ("eval negative energy", lambda t, d, c: ["eval", "--checkpoint", c, "--e-mac", "-1"], ["positive"]),
    ("compare nothing there", lambda t, d, c: ["compare", str(t / "nothing")], ["nothing"]),
    ("resume garbage", lambda t, d, c: ["train", "-c", CONF, "--resume", _bytes_file(t, "g.pth.tar", b"garbage")], ["is not a PyTorch checkpoint"]),
    ("resume original without --no-resume-opt", lambda t, d, c: ["train", "-c", CONF, "--resume", _other_size_checkpoint(t, d)], ["original code", "--no-resume-opt"]),
    ("resume folder without checkpoints", lambda t, d, c: ["train", "-c", CONF, "--resume", str(t)], ["no readable checkpoint"]),
    ("study bad mode", lambda t, d, c: ["study", "-c", CONF, "--modes", "lif,relu", "--dry-run"], ["relu"]),
    ("study bad threshold list", lambda t, d, c: ["study", "-c", CONF, "--thresholds", "0.8,high", "--dry-run"], ["--thresholds"]),
    ("study bad --set", lambda t, d, c: ["study", "-c", CONF, "--set", "epochs", "--dry-run"], ["key=value"]),
    ("study nproc without devices", lambda t, d, c: ["study", "-c", CONF, "--nproc-per-run", "2", "--study-dir", str(t / "s"), "--epochs", "0", "--cooldown-epochs", "1"], ["--devices"]),
]


@pytest.mark.parametrize("case", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_bad_checkpoint_and_command_input(case, tmp_path, data, ckpt, capsys):
    _, make_args, words = case
    code, _, err = run_cli(make_args(tmp_path, data, ckpt), capsys)
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("command", ["train", "eval", "compare", "study"])
def test_every_command_prints_its_help(command, capsys):
    """argparse formats help with %: a config field's help holding "%" must not break --help."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if command == "train":
        assert "38 % of full's activation memory" in " ".join(out.split())
