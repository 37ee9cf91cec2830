"""Hints name the real cause and its fix: a neuron whose plugin was forgotten, an offline download, a
near-miss name of any registry, and flags a subcommand sets itself. Each is one line on stderr, exit 2."""

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spikedriven.errors import ConfigError, did_you_mean, unknown_choice

from helpers import DEMO, TINY_RUN, run_cli

ROOT = Path(__file__).resolve().parents[1]
CIFAR = str(ROOT / "conf/cifar10/2_256_300E_t4.yml")
BUILT_IN = "if, if_soft, if_learnable, lif, lif_soft, plif, multispike"


def one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert err.startswith("error: ") and "usage:" not in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_the_one_wording_of_an_unknown_name():
    assert unknown_choice("spike mode", "lfi", ["if", "lif"], "neurons") == \
        "unknown spike mode 'lfi' (did you mean 'lif'?); the registered neurons are if, lif"
    assert unknown_choice("surrogate", "relu", ["sigmoid", "atan"]) == \
        "unknown surrogate 'relu'; the registered surrogates are sigmoid, atan"
    assert did_you_mean("LIF", ["if", "lif"]) == " (did you mean 'lif'?)"  # case is no part of a typo
    assert did_you_mean("digit", ["sklearn/digits"], {"digits": "sklearn/digits"}) == \
        " (did you mean 'sklearn/digits'?)"


# --------------------------------------------------------------- a forgotten --plugins


def test_a_neuron_of_ones_own_without_its_plugin_is_named_before_its_flags(capsys):
    # before: 36 lines of usage and "'--beta' (did you mean --tet?)"
    line = one_error_line(*run_cli(["train", "-c", DEMO, "--spike-mode", "beta_lif", "--beta", "0.8"], capsys)[::2])
    assert line == (f"error: unknown spike mode 'beta_lif'; the registered neurons are {BUILT_IN}; is it a neuron of "
                    "your own? give the file that registers it with --plugins FILE: its settings (--beta here) are "
                    "flags only once it is loaded")


def test_the_config_files_neuron_and_the_studys_modes_count_too(tmp_path, capsys):
    config = tmp_path / "beta.yml"
    config.write_text(f"spike_mode: beta_lif\n{Path(DEMO).read_text()}".replace("spike_mode: lif\n", ""))
    line = one_error_line(*run_cli(["train", "-c", str(config), "--beta=0.8"], capsys)[::2])
    assert "unknown spike mode 'beta_lif'" in line and "--plugins FILE" in line and "(--beta here)" in line
    line = one_error_line(*run_cli(["study", "-c", DEMO, "--modes", "lif,beta_lif", "--beta", "0.8", "--dry-run"],
                                   capsys)[::2])
    assert "unknown spike mode 'beta_lif'" in line and "(--beta here)" in line


def test_an_unknown_flag_beside_a_registered_neuron_keeps_its_suggestion(capsys):
    with pytest.raises(SystemExit):
        run_cli(["train", "-c", DEMO, "--spike-mode", "lif", "--taux", "2"], capsys)
    assert "'--taux' (did you mean --tau?)" in capsys.readouterr().err


PLUGIN = """
from spikedriven.neurons import Param, ThresholdNeuron, register_neuron

@register_neuron
class HintLIF(ThresholdNeuron):
    name = "hint_lif"
    params = {"hint_decay": Param(0.5, "kept per step",
                                  check=lambda v, _: None if 0 <= v <= 1 else "must lie in [0, 1]")}

    def charge(self, v, x):
        return self.hint_decay * v + x

    def reset(self, h, spike):
        return h * (1.0 - spike)
"""


@pytest.fixture
def registries_restored():
    from spikedriven import plugins
    from spikedriven.neurons import NEURONS

    neurons, loaded = dict(NEURONS), dict(plugins._PLUGINS)
    yield
    NEURONS.clear()
    NEURONS.update(neurons)
    plugins._PLUGINS.clear()
    plugins._PLUGINS.update(loaded)


def test_the_plugins_of_the_config_file_give_their_neurons_flags(tmp_path, capsys, registries_restored):
    # before: the file's plugin was loaded after parsing, so its neuron's --hint-decay was an unknown flag
    (tmp_path / "hint_neuron.py").write_text(PLUGIN)
    config = tmp_path / "c.yml"
    config.write_text(f"plugins: [{tmp_path / 'hint_neuron.py'}]\nspike_mode: hint_lif\n")
    line = one_error_line(*run_cli(["train", "-c", str(config), "--hint-decay", "2"], capsys)[::2])
    assert "hint_decay must lie in [0, 1], got 2" in line


def test_a_plugin_that_is_not_a_python_file(tmp_path, capsys):
    # before: "failed to import: AttributeError: 'NoneType' object has no attribute 'loader'"
    (tmp_path / "mine.txt").write_text("x = 1\n")
    line = one_error_line(*run_cli(["train", "-c", DEMO, "--plugins", str(tmp_path / "mine.txt")], capsys)[::2])
    assert line.endswith("mine.txt is not a Python file: give a .py file or a module name")


# --------------------------------------------------------------- did you mean, in every registry


@pytest.mark.parametrize("args, expected", [
    (["--spike-mode", "lfi"], f"unknown spike mode 'lfi' (did you mean 'lif'?); the registered neurons are {BUILT_IN}; "
                              "is it a neuron of your own? give the file that registers it with --plugins FILE"),
    (["--spike-mode", "LIF"], "unknown spike mode 'LIF' (did you mean 'lif'?)"),
    (["--surrogate", "sigmod"], "unknown surrogate 'sigmod' (did you mean 'sigmoid'?); the registered surrogates are "
                                "sigmoid, atan, piecewise_quadratic, erf, soft_sign, rect"),
    (["--dataset", "digit"], "unknown dataset 'digit' (did you mean 'sklearn/digits'?); the registered datasets are "
                             "cifar10-dvs, dvs128-gesture, imagenet, sklearn/digits, torch/cifar10, torch/cifar100"),
    (["--encoding", "rat"], "unknown encoding 'rat' (did you mean 'rate'?); the registered encodings are direct, "
                            "latency, rate, simple_poisson; an encoding of your own is loaded with --plugins FILE"),
    (["--model", "sdtt"], "unknown model 'sdtt' (did you mean 'sdt'?); the registered models are sdt, "),
    (["--model", "spikformer_cifar", "--model-args", "depht=2"], "model spikformer_cifar takes no depht (2) "
                                                                 "(from model_args, a top-level key or a flag) "
                                                                 "(did you mean 'depth'?)"),
    (["--neuron-args", "tua=3"], "neuron 'lif' takes no setting tua (did you mean 'tau'?); its settings are "),
    (["--encoding", "rate", "--encoding-args", "gian=2"],
     "encoding 'rate' takes no setting gian (did you mean 'gain'?)"),
])
def test_an_unknown_choice_gets_the_closest_name_and_the_list(args, expected, capsys):
    line = one_error_line(*run_cli(["train", "-c", DEMO, *args], capsys)[::2])
    assert expected in line


def test_an_unknown_energy_model_gets_the_closest_name(capsys):
    # before: "unknown energy model lemair; the energy models are sdt, neuron, lemaire"
    line = one_error_line(*run_cli(["eval", "--checkpoint", "none.pth", "--energy", "sdt,lemair"], capsys)[::2])
    assert line == ("error: unknown energy model 'lemair' (did you mean 'lemaire'?); the registered energy models are "
                    "sdt, neuron, lemaire")


def test_the_lookups_themselves_raise_the_sentence():
    from spikedriven.neurons.surrogates import spike_function

    with pytest.raises(ConfigError, match=r"unknown surrogate 'atna' \(did you mean 'atan'\?\)"):
        spike_function("atna")


# --------------------------------------------------------------- the study's own flags


@pytest.mark.parametrize("flag, instead", [("--spike-mode", "--modes"), ("--v-threshold", "--thresholds"),
                                           ("--output", "--study-dir")])
def test_a_flag_the_study_sets_itself_names_its_replacement(flag, instead, capsys):
    # before: usage and "'--spike-mode' (did you mean --rpe-mode?)"
    line = one_error_line(*run_cli(["study", "-c", DEMO, flag, "1", "--dry-run"], capsys)[::2])
    assert instead in line and f"not {flag}" in line


# --------------------------------------------------------------- an offline --download


def _offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_a_failed_download_keeps_the_url_and_layout_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    _offline(monkeypatch)
    data_dir = tmp_path / "new" / "data"
    line = one_error_line(*run_cli(["train", "-c", CIFAR, "--download", "--data-dir", str(data_dir), *TINY_RUN],
                                   capsys)[::2])
    assert "download of torch/cifar10 from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz failed" in line
    assert "Name or service not known" in line
    assert f"extract it into {data_dir}, so that it holds {data_dir}/cifar-10-batches-py/ with data_batch_1" in line
    assert not (tmp_path / "new").exists()  # before: an empty new/data/ was left behind


def test_a_failed_download_into_an_existing_folder_keeps_it_and_what_it_held(tmp_path, monkeypatch, capsys):
    _offline(monkeypatch)
    (tmp_path / "mine.txt").write_text("kept")
    code, _, err = run_cli(["train", "-c", CIFAR, "--download", "--data-dir", str(tmp_path), *TINY_RUN], capsys)
    one_error_line(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
