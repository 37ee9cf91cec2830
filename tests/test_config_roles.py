"""Each config field declares its role once; the lists that treat settings alike (what a resume may change,
what defines the trained network, --help's sections) are derived from the roles, and each is pinned here, so
that a changed role is a decision this file shows. And a run's settings are resolved once: the config file
read once, the config validated once."""

import argparse
import dataclasses

import pytest
import yaml

from spikedriven.config import (FIELDS, Config, add_config_flags, from_mapping, load_config, load_yaml,
                                requested_values, resolve_settings)
from spikedriven.config import schema
from spikedriven.config.flags import flag_name, section_title

from helpers import DEMO

# what each list held when it was kept by hand, before the roles
RUNTIME = {"data_dir", "download", "workers", "val_batch_size", "device", "channels_last", "backward_memory",
           "compile", "compile_mode", "fused_optimizer", "nonfinite", "log_interval", "log_wandb", "output",
           "plugins", "eval_img_size"}
MODEL_FIELDS = ("num_classes", "img_size", "in_chans", "time_steps", "tet")  # in the order a model records them
NEURON_FIELDS = ("v_threshold", "v_reset", "tau", "surrogate", "surrogate_alpha", "detach_reset")
MODEL_SETTINGS = ("model", *MODEL_FIELDS, "spike_mode", *NEURON_FIELDS, "neuron_args", "dataset", "mean", "std",
                  "encoding", "encoding_args", "encode_eval")  # in the order evaluation lists conflicts in
SCHEDULE_LENGTH = ("epochs", "cooldown_epochs")


def test_every_field_has_a_known_role_and_kind():
    for name, f in FIELDS.items():
        assert f.metadata.get("role") in schema.ROLES, name
        assert f.metadata.get("kind", None) in (None, *schema.KINDS), name
    assert all(schema.fields_of(role) for role in schema.ROLES)  # no role without a field


def test_a_field_without_a_role_or_with_an_unknown_one_is_refused_at_its_definition():
    with pytest.raises(ValueError, match="role must be one of"):
        schema._f(1, "a new setting")
    with pytest.raises(ValueError, match="role must be one of"):
        schema._f(1, "a new setting", role="training")
    with pytest.raises(ValueError, match="kind must be one of"):
        schema._f(1, "a new setting", role="runtime", kind="resumable")
    with pytest.raises(ValueError, match="role must be one of"):
        @dataclasses.dataclass
        class Forgotten:
            new_setting: int = schema._f(1, "a new setting")
    assert schema._f(1, "a new setting", role="runtime").metadata["role"] == "runtime"


def test_the_derived_lists_hold_what_the_hand_kept_ones_held():
    from spikedriven.analysis import evaluation
    from spikedriven.engine import resume

    assert set(schema.RUNTIME_SETTINGS) == RUNTIME and len(schema.RUNTIME_SETTINGS) == len(RUNTIME)
    assert schema.MODEL_FIELDS == MODEL_FIELDS
    assert schema.NEURON_FIELDS == NEURON_FIELDS
    assert schema.MODEL_SETTINGS == MODEL_SETTINGS
    assert schema.SCHEDULE_LENGTH == SCHEDULE_LENGTH
    assert set(schema.NEURON_SETTINGS) == {"spike_mode", "neuron_args", "neurons", *NEURON_FIELDS}
    # the users import the derived ones
    assert resume.RUNTIME_SETTINGS is schema.RUNTIME_SETTINGS and resume.SCHEDULE_LENGTH is schema.SCHEDULE_LENGTH
    assert evaluation.MODEL_SETTINGS is schema.MODEL_SETTINGS
    # the YAML-only fields: the settings per model, neuron and encoding
    assert {n for n, f in FIELDS.items() if f.metadata.get("flag") is False} == {"models", "neurons", "encodings"}


def test_the_roles_of_the_fields():
    """The whole map, so that a new field's role, or a changed one, is seen here."""
    roles = {role: set(schema.fields_of(role)) for role in schema.ROLES}
    assert roles == {
        "input": {"dataset", "num_classes", "img_size", "in_chans", "mean", "std", "encoding", "encoding_args",
                  "encodings", "encode_eval"},
        "data": {"crop_pct", "scale", "ratio", "interpolation", "hflip", "aa", "aa_ops", "color_jitter", "reprob",
                 "remode", "recount", "val_size", "aug_repeats"},
        "model": {"model", "model_args", "models", "time_steps"},
        "neuron": {"spike_mode", *NEURON_FIELDS, "neuron_args", "neurons"},
        "loss": {"mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "mixup_mode", "mixup_off_epoch", "smoothing",
                 "tet", "tet_means", "tet_lamb", "bce_loss", "bce_target_thresh", "teacher", "teacher_checkpoint",
                 "distillation_type", "distillation_alpha", "distillation_tau"},
        "optimisation": {"opt", "lr", "weight_decay", "opt_betas", "opt_eps", "opt_kwargs", "clip_grad",
                         "batch_size", "seed", "amp"},
        "schedule": {"sched", "epochs", "warmup_epochs", "warmup_lr", "min_lr", "cooldown_epochs", "warmup_prefix",
                     "sched_on_updates"},
        "runtime": RUNTIME - {"output", "log_interval", "log_wandb"},
        "reporting": {"output", "log_interval", "log_wandb"},
    }


def test_help_groups_the_flags_by_role():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    groups = {g.title: {o for a in g._group_actions for o in a.option_strings} for g in parser._action_groups}
    for name, f in FIELDS.items():
        if f.metadata.get("flag") is not False:
            assert flag_name(name) in groups[section_title(f.metadata["role"])], name
    assert section_title("runtime") == "run (each flag also a YAML key)"


# ---------------------------------------------------------------- one reading, one validation


@pytest.fixture
def counted(monkeypatch):
    """How often a config file's text is parsed as YAML, and Config.validate runs."""
    counts = {"read": 0, "validate": 0}
    parse, validate = yaml.safe_load, Config.validate

    def counting_parse(stream, *args, **kwargs):
        if isinstance(stream, str) and "\n" in stream:  # a file's text (a flag's value is one line)
            counts["read"] += 1
        return parse(stream, *args, **kwargs)

    def counting_validate(self):
        counts["validate"] += 1
        return validate(self)

    monkeypatch.setattr(yaml, "safe_load", counting_parse)
    monkeypatch.setattr(Config, "validate", counting_validate)
    return counts


def test_spikedriven_train_reads_its_file_once_and_validates_once(counted, monkeypatch):
    """Before: the file read three times (the entry point's look for plugins, load_config, requested_values)
    and the config validated three times (the file's, the flags', the whole)."""
    import spikedriven.engine.trainer as trainer
    from spikedriven.cli import main

    trained = []
    monkeypatch.setattr(trainer, "train", lambda cfg, plan, **kwargs: trained.append(cfg))
    assert main(["train", "-c", DEMO, "--epochs", "1", "--depth", "1", "--levels", "4", "--spike-mode",
                 "multispike"]) == 0
    assert counted == {"read": 1, "validate": 1}
    assert (trained[0].epochs, trained[0].model_settings()["depth"], trained[0].neuron_spec().levels) == (1, 1, 4)


def test_one_resolution_gives_the_config_where_each_value_came_from_and_the_requested_values(counted, tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("lr: 0.01\nTET: true\nepochs: 5\ndepth: 2\nnum_heads: 2\n")
    settings = resolve_settings(path, {"lr": "0.02", "experiment": "e1", "embed_dim": 16})
    assert counted == {"read": 1, "validate": 1}
    cfg = settings.config
    assert (cfg.lr, cfg.tet, cfg.epochs, cfg.output) == (0.02, True, 5, "output/train/e1")
    assert cfg.model_settings()["depth"] == 2 and cfg.model_settings()["embed_dim"] == 16
    assert settings.origins["lr"] == "flag" and settings.origins["tet"] == "file"
    assert settings.origins["output"] == "flag" and settings.origins["seed"] == "default"
    assert (settings.requested, settings.sources) == requested_values(path, {"lr": "0.02", "experiment": "e1",
                                                                             "embed_dim": 16})
    # the file already read is not read again
    counted.update(read=0, validate=0)
    assert resolve_settings(path, {}, values=load_yaml(path)).config == load_config(path)
    assert counted == {"read": 2, "validate": 2}  # load_yaml here and load_config's own reading


@pytest.mark.parametrize("overrides", [
    {},
    {"lr": "0.02", "model": "spikformer_cifar", "spike_mode": "if_soft"},
    {"dataset": "torch/cifar100", "num_classes": "100"},  # the file's dataset's normalisation, as it always was
    {"output": "runs", "experiment": "e1", "embed_dim": "32", "num_heads": "4"},
])
def test_one_validation_gives_the_config_the_file_then_the_flags_gave(tmp_path, overrides):
    path = tmp_path / "c.yml"
    path.write_text("dataset: torch/cifar10\nepochs: 5\ndepth: 2\nmodels: {sdt: {embed_dim: 64}}\n")
    layered = from_mapping(overrides, "command line", base=from_mapping(load_yaml(path), str(path)))
    assert resolve_settings(path, overrides).config == layered


def test_a_dataset_flag_over_a_file_keeps_the_files_normalisation_and_alone_takes_its_own(tmp_path):
    from spikedriven.data import dataset_def

    path = tmp_path / "c.yml"
    path.write_text("dataset: torch/cifar10\n")
    over_file = load_config(path, {"dataset": "torch/cifar100"})
    alone = load_config(None, {"dataset": "torch/cifar100"})
    assert over_file.mean == list(dataset_def("torch/cifar10").mean)
    assert alone.mean == list(dataset_def("torch/cifar100").mean)


def test_the_models_common_arguments_are_the_configs_constructor_fields_and_the_neuron():
    """models/ sits below config/ and cannot read its roles: its own list of the arguments every model takes
    must name the config's constructor fields (and the neuron, which the config resolves into a spec)."""
    from spikedriven.config import MODEL_FIELDS
    from spikedriven.models.registry import COMMON_ARGS

    assert COMMON_ARGS == (*MODEL_FIELDS, "neuron")
