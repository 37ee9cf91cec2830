"""The config package: values read as their field's type, files and flags over them, what a run records.
(Bad input through the command line is in test_cli_errors.py; the original's files in test_original_configs.py.)"""

import argparse
import dataclasses

import pytest

from spikedriven.config import (FIELDS, Config, add_config_flags, coerce, flag_name, load_config, overrides_from_args,
                                recorded_config, requested_values, save_config)
from spikedriven.config.files import experiment_output
from spikedriven.errors import ConfigError

from helpers import DEMO


@pytest.mark.parametrize("text, expected", [("false", False), ("False", False), ("0", False), ("no", False),
                                            ("true", True), ("True", True), ("1", True)])
def test_booleans_parse_like_a_person_means(text, expected):
    assert load_config(DEMO, {"tet": text}).tet is expected


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text("lr: 3e-4\nweight_decay: 6e-2\n")
    cfg = load_config(path)
    assert cfg.lr == 3e-4 and cfg.weight_decay == 0.06


@pytest.mark.parametrize("name, text, expected", [
    ("workers", "auto", None), ("workers", "none", None), ("workers", "3", 3),
    ("compile", "auto", None), ("compile", "false", False),
    ("opt_betas", "none", None), ("opt_betas", ["0.8", "0.9"], [0.8, 0.9]),
    ("surrogate_alpha", "none", None), ("surrogate_alpha", "2", 2.0),
    ("neuron_args", ["levels=8"], {"levels": 8}),
])
def test_a_value_is_read_as_its_fields_type(name, text, expected):
    assert coerce(name, text, "command line") == expected


@pytest.mark.parametrize("name, text, words", [
    ("epochs", "ten", "epochs"), ("lr", "fast", "lr"), ("tet", "maybe", "tet"), ("workers", "-x", "workers"),
])
def test_a_value_of_the_wrong_type_is_one_sentence_naming_the_key(name, text, words):
    with pytest.raises(ConfigError, match=words):
        coerce(name, text, "command line")


def test_every_field_has_one_flag_and_every_flag_reads_back():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    flags = {o for action in parser._actions for o in action.option_strings}
    # models:, neurons: and encodings: (settings per model, neuron, encoding) are mappings of mappings, YAML only
    yaml_only = ("models", "neurons", "encodings")
    assert all(flag_name(name) in flags for name in FIELDS if name not in yaml_only)
    assert not {"--models", "--neurons", "--encodings"} & flags
    args = parser.parse_args(["--batch-size", "32", "--download", "--no-detach-reset", "--spike-mode", "if"])
    assert overrides_from_args(args) == {"batch_size": "32", "download": "true", "detach_reset": "false",
                                         "spike_mode": "if"}
    cfg = load_config(DEMO, overrides_from_args(args))
    assert (cfg.batch_size, cfg.download, cfg.detach_reset, cfg.spike_mode) == (32, True, False, "if")


def test_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("embed_dim: 16\nnum_heads: 2\nlr: 0.01\n")
    cfg = load_config(path, {"lr": "0.02"})
    assert cfg.lr == 0.02 and cfg.model_settings()["embed_dim"] == 16 and cfg.epochs == FIELDS["epochs"].default


def test_requested_values_are_our_keys_with_where_each_came_from(tmp_path):
    """What a resume compares with the checkpoint: the file's and the flags' values in our vocabulary (the
    original's spellings translated, its keys that change nothing left out), and the file each came from."""
    path = tmp_path / "orig.yml"
    path.write_text("TET: true\nchannels-last: false\ndrop_path: 0.1\nlr: 0.01\n")
    requested, sources = requested_values(path, {"lr": "0.02", "experiment": "e1", "log_wandb": "false"})
    assert requested == {"tet": True, "channels_last": False, "lr": "0.02", "log_wandb": "false",
                         "output": "output/train/e1"}
    assert sources == {"tet": str(path), "channels_last": str(path)}


def test_timm_s_experiment_names_the_run_folder_under_output():
    assert experiment_output(None, "e1") == "output/train/e1"
    assert experiment_output("runs", "e1") == "runs/e1"
    assert load_config(DEMO, {"output": "runs", "experiment": "e1"}).output == "runs/e1"


def test_a_saved_config_reads_back_the_same(tmp_path):
    cfg = load_config(DEMO, {"spike_mode": "multispike", "neuron_args": ["levels=4"], "workers": "auto"})
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    # a run's recorded settings, read by resume and eval, give the same config
    assert recorded_config(cfg.to_dict(), "checkpoint").to_dict() == cfg.to_dict()


def test_the_dataset_fills_in_its_mean_and_std_and_a_neuron_refuses_settings_it_does_not_take():
    cfg = load_config(DEMO)
    assert cfg.mean is not None and len(cfg.mean) == cfg.in_chans
    with pytest.raises(ConfigError, match="neuron 'if' takes no tau"):
        load_config(DEMO, {"spike_mode": "if", "tau": "3.0"})
    assert isinstance(load_config(DEMO, {"spike_mode": "if", "tau": "2.0"}), Config)  # at its default: accepted


def test_the_config_and_the_model_call_each_setting_by_one_name():
    import inspect

    import timm

    from spikedriven.config.schema import MODEL_FIELDS
    from spikedriven.models import SpikeDrivenTransformer

    cfg = load_config(DEMO)
    kwargs, settings = cfg.model_kwargs(), cfg.model_settings()
    assert set(kwargs) == {*MODEL_FIELDS, *settings, "neuron"} and set(MODEL_FIELDS) <= set(FIELDS)
    assert set(kwargs) <= set(inspect.signature(SpikeDrivenTransformer).parameters)
    model = timm.create_model(cfg.model, **kwargs)
    assert model.model_args == kwargs  # what a checkpoint records is what the config says, key for key
    assert (len(model.block), model.embed_dim, model.time_steps) == (settings["depth"], settings["embed_dim"],
                                                                      cfg.time_steps)


@pytest.mark.parametrize("given", [
    ["--layer", "3", "--dim", "32", "--in-channels", "3"],  # the study's flags
    ["--depth", "3", "--embed-dim", "32", "--in-chans", "3"],
])
def test_the_studys_spellings_are_flag_aliases(given):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    cfg = load_config(DEMO, overrides_from_args(parser.parse_args(given)))
    settings = cfg.model_settings()
    assert (settings["depth"], settings["embed_dim"], cfg.in_chans) == (3, 32, 3)


def test_a_file_in_the_studys_spellings_reads_as_the_models_names(tmp_path):
    path = tmp_path / "study.yml"
    path.write_text("layer: 3\ndim: 32\nin_channels: 3\ntime_steps: 2\nnum_heads: 4\n")
    cfg = load_config(path)
    settings = cfg.model_settings()
    assert (settings["depth"], settings["embed_dim"], cfg.in_chans, cfg.time_steps) == (3, 32, 3, 2)
    save_config(cfg, tmp_path / "config.yaml")  # a run records the one name
    text = (tmp_path / "config.yaml").read_text()
    assert "depth: 3" in text and "embed_dim: 32" in text and "\nlayer:" not in text and "\ndim:" not in text
    # a run folder of an earlier version (config.yaml in the study's names) still reads
    assert recorded_config({"layer": 3, "dim": 32, "num_heads": 4}, "old config.yaml").model_settings()["embed_dim"] == 32
    # both spellings with different values: one sentence, not a silent pick
    path.write_text("layer: 3\ndepth: 2\n")
    with pytest.raises(ConfigError, match="depth is given twice with different values"):
        load_config(path)


def test_a_checkpoint_of_an_earlier_version_that_records_T_is_still_checked_and_built():
    import timm
    import torch

    from spikedriven.engine.checkpoint import settings_mismatch

    from helpers import tiny_model_kwargs

    model = timm.create_model("sdt", **tiny_model_kwargs(time_steps=2))
    old = {"format": "spikedriven", "model_args": {**{k: v for k, v in model.model_args.items() if k != "time_steps"},
                                                   "T": 3}, "state_dict": model.state_dict()}
    assert settings_mismatch(model, old) == ["time_steps 3 (the model has 2)"]
    old["model_args"]["T"] = 2
    assert settings_mismatch(model, old) == []
    # an export's config.json of an earlier version passes T to timm.create_model
    exported = {k: v for k, v in tiny_model_kwargs().items() if k != "time_steps"}
    built = timm.create_model("sdt", **exported, T=3)
    assert built.time_steps == 3 and built(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
