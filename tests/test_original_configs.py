"""The original's config files and flags: every file runs, every problem of a file in one message."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.errors import ConfigError
from spikedriven.testing import write_fake_cifar

from helpers import DEMO, SMALL, read_summary, run_cli
from original_configs import ORIGINAL_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, name):
    path = tmp_path / name.replace("/", "_")
    path.write_text(ORIGINAL_CONFIGS[name])
    return path


@pytest.mark.parametrize("name", sorted(ORIGINAL_CONFIGS))
def test_every_original_config_file_parses(tmp_path, name, warnings_seen):
    path = _write(tmp_path, name)
    cfg = load_config(path)
    raw = ORIGINAL_CONFIGS[name]
    keys = yaml.safe_load(raw)
    # the facts a reader of the file expects in the run
    assert cfg.amp == ("fp16" if keys.get("amp") is True else "none")
    assert cfg.tet == (keys.get("TET") is True)
    if "TET_lamb" in raw:
        assert cfg.tet_lamb == 0.001 and cfg.tet_means == 1.0
    if "opt: lamb" in raw and "opt_eps" not in raw:
        assert cfg.opt_eps is None  # LAMB's own 1e-6, as the original left it
    warnings = [m for m in warnings_seen() if "change nothing here" in m]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert "model-ema" in warnings[0] or "model_ema" in warnings[0]
    if "drop_path" in raw:
        assert "drop_path (built by the original model but never applied in its forward)" in warnings[0]


def test_the_warning_is_given_once_per_file(tmp_path, warnings_seen):
    path = _write(tmp_path, "sdt-original-conf/cifar10/2_256_300E_t4.yml")
    load_config(path)
    load_config(path)  # a study reads its file once per run
    assert sum("change nothing here" in m for m in warnings_seen()) == 1


def test_a_hyphenated_key_beside_its_underscore_twin_is_the_one_the_original_ignored(tmp_path):
    # timm's train.py sets a file's keys as parser defaults, so `bce-loss: True` reached no argument
    # beside `bce_loss: False` (the original's 8-768 ImageNet file has both)
    cfg = load_config(_write(tmp_path, "sdt-original-conf/imagenet/8_768_300E_t4.yml"))
    assert cfg.bce_loss is False and cfg.bce_target_thresh is None


def test_the_original_spellings_are_understood(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text("TET: True\nTET_means: 0.5\nTET_lamb: 0.01\nchannels-last: true\nmlp-ratio: 2\namp: False\n"
                    "model-ema: False\noutput: ''\nopt_betas: None\n")
    cfg = load_config(path)
    assert (cfg.tet, cfg.tet_means, cfg.tet_lamb, cfg.channels_last, cfg.model_settings()["mlp_ratio"], cfg.amp) == (
        True, 0.5, 0.01, True, 2.0, "none")
    assert cfg.output is None and cfg.opt_betas is None


def test_every_problem_of_a_file_is_reported_in_one_message(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text("model_ema: true\nuse_conv_as_linear: false\nbatch_sise: 8\nepochs: many\nvflip: 0.5\n"
                    "drop_path: 0.1\nTET_mean: 1.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path} has 6 problems: ")
    for part in ("model_ema: True is not implemented", "use_conv_as_linear: False is not implemented (only "
                 "convolutions as linear layers", "unknown config key 'batch_sise' (did you mean 'batch_size'?)",
                 "epochs (from", "vflip: 0.5 is not implemented (vertical flips)",
                 "unknown config key 'TET_mean' (did you mean 'tet_means'?)"):
        assert part in text, text
    assert "drop_path" not in text  # inert at any value: a warning, not a problem


def test_a_key_that_changes_nothing_only_at_some_values(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text("reprob: 0.0\nremode: pixel\nmodel_ema: false\nmodel_ema_decay: 0.5\nsched: cosine\n"
                    "decay_epochs: 30\nmomentum: 0.5\nopt: adamw\n")
    load_config(path)  # every one of them is inert here
    path.write_text("interpolation: bilinear\ntrain_interpolation: bicubic\n")
    with pytest.raises(ConfigError, match="train_interpolation: 'bicubic' differs from interpolation"):
        load_config(path)


def test_a_typo_gets_a_sensible_suggestion_or_none(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text("lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' \(did you mean 'lr'\?\)"):
        load_config(path)
    path.write_text("zzz_qqq: 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'zzz_qqq' \(--help lists the valid keys\)"):
        load_config(path)


CIFAR_FILES = sorted(n for n in ORIGINAL_CONFIGS if "/cifar10/" in n or "/cifar100/" in n)


@pytest.mark.parametrize("name", CIFAR_FILES)
def test_the_original_cifar_files_train_one_epoch(tmp_path, name, capsys):
    raw = ORIGINAL_CONFIGS[name]
    dataset = "torch/cifar100" if "cifar100" in raw else "torch/cifar10"
    data = write_fake_cifar(tmp_path / "data", dataset=dataset, n_train=8, n_test=4)
    code, out, err = run_cli(["train", "-c", str(_write(tmp_path, name)), "--data-dir", str(data), "--epochs", "1",
                              "--cooldown-epochs", "0", "--warmup-epochs", "0", "--batch-size", "4",
                              "--val-batch-size", "4", "--workers", "0", "--device", "cpu",
                              "--output", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "results.json").is_file()
    recorded = load_config(tmp_path / "run" / "config.yaml")
    keys = yaml.safe_load(raw)
    settings = recorded.model_settings()
    assert (settings["embed_dim"], recorded.time_steps, settings["depth"]) == (keys["dim"], keys["time_steps"], keys["layer"])


# ------------------------------------------------------------------ flags


def _parsed(args):
    from spikedriven.cli import build_parser
    from spikedriven.config import overrides_from_args

    return overrides_from_args(build_parser().parse_args(["train", *args]))


def test_bare_boolean_flags_and_their_negations():
    assert _parsed(["--download"])["download"] == "true"
    assert _parsed(["--download", "false"])["download"] == "false"
    assert _parsed(["--no-detach-reset"])["detach_reset"] == "false"
    assert _parsed(["--TET"])["tet"] == "true"
    assert _parsed(["-b", "32", "-j", "2"]) == {"batch_size": "32", "workers": "2"}


def test_help_shows_defaults_and_sections(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # help wraps lines
    for section in ("data (", "mixup and loss (", "model (", "neuron (", "optimisation (", "schedule (", "run ("):
        assert section in out
    assert "(default: 64)" in out and "(default: torch/cifar10)" in out


def test_an_unknown_or_abbreviated_flag_gets_the_subcommand_usage_and_a_suggestion(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "-c", DEMO, "--epoch", "2"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "usage: spikedriven train" in err and "'--epoch' (did you mean --epochs?)" in err
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", "x", "--speeed"])
    assert "usage: spikedriven eval" in capsys.readouterr().err


def test_the_original_train_flags(tmp_path, capsys):
    code, out, err = run_cli(["train", "-c", DEMO, *SMALL, "--local-rank=0", "-b", "32", "--output", str(tmp_path),
                              "--experiment", "e1"], capsys)
    assert code == 0, err
    assert (tmp_path / "e1" / "results.json").is_file()
    assert load_config(tmp_path / "e1" / "config.yaml").batch_size == 32


def test_firing_num_takes_the_original_output_flag(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--output", str(run)]) == 0
    done = subprocess.run([sys.executable, str(ROOT / "firing_num.py"), "-c", DEMO, "--resume",
                           str(run / "last.pth.tar"), "--no-resume-opt", "--output", str(tmp_path / "ev")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_resuming_reads_the_original_flags_and_files_in_our_vocabulary(tmp_path, capsys):
    code, out, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(tmp_path), "--experiment", "e1"], capsys)
    assert code == 0, err
    run = tmp_path / "e1"
    code, out, err = run_cli(["train", "--resume", str(run), "--log-wandb", "false", "--epochs", "2",
                              "--output", str(tmp_path), "--experiment", "e1"], capsys)
    assert code == 0, err
    assert [r["epoch"] for r in read_summary(run)] == ["0", "1"]
    # the original's file, with its keys that change nothing, is compared setting by setting
    original = _write(tmp_path, "sdt-original-conf/cifar10/2_256_300E_t4.yml")
    code, out, err = run_cli(["train", "-c", str(original), "--resume", str(run)], capsys)
    assert code == 2 and "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "cannot continue" in error and "dataset='torch/cifar10'" in error
    assert "pretrained" not in error and "model-ema" not in error
