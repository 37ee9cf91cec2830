"""The documentation works: the site builds with --strict, the reference pages cover every flag and config key,
every Python snippet runs, every command line parses, and the digits-demo commands run (tiny)."""

from __future__ import annotations

import importlib.util
import re
import shlex

import pytest

from docs_text import ROOT, blocks

TINY = ["--epochs", "1", "--embed-dim", "16", "--num-heads", "2", "--warmup-epochs", "0"]
# the documented commands that run on the digits demo, executed below with TINY appended
DEMO_TRAIN = "spikedriven train -c conf/digits/demo.yml --spike-mode if_soft"
DEMO_EVAL = "spikedriven eval --checkpoint output/train/<run>/best.pth.tar"
DIGITS_STUDY = "spikedriven study -c conf/digits/demo.yml --models sdt,spikformer_cifar --modes lif,if_soft --seeds 2"
PREFIXES = {"spikedriven": [], "python train.py": ["train"], "python firing_num.py": ["eval"]}


def generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command_lines() -> list[tuple[str, str, list[str]]]:
    """Every command line of the docs' shell blocks as (file, line, argv of spikedriven). Convention: a
    line ending in a backslash continues; `# ...` is a comment; a lone `...` token stands for the rest of
    an earlier command line and is dropped; `> FILE` ends the command."""
    found = []
    for path, text in blocks():
        if path.suffix != ".md" or text in (t for _, t in blocks("python") + blocks("yaml")):
            continue
        for line in text.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line.startswith(("spikedriven ", "python train.py", "python firing_num.py", "torchrun ")):
                continue
            words = shlex.split(line, comments=True)
            if "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["spikedriven"]:
                words = ["spikedriven", *words[words.index("-m") + 2:]]  # torchrun ... -m spikedriven
            for prefix, head in PREFIXES.items():
                if words[:len(prefix.split())] == prefix.split():
                    argv = head + words[len(prefix.split()):]
                    if ">" in argv:
                        argv = argv[:argv.index(">")]
                    found.append((path.relative_to(ROOT).as_posix(), line.split("  #")[0].strip(),
                                  [w for w in argv if w != "..."]))
                    break
    return found


# ---------------------------------------------------------------- the site and its reference


def test_the_site_builds_strictly(tmp_path):
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(tmp_path / "site"), strict=True)
    build(config)  # raises on any warning (a broken link, a page missing from the nav) under strict
    commands = (tmp_path / "site" / "reference" / "commands" / "index.html").read_text()
    assert "--spike-mode" in (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "runs-table" in commands and "--report-only" in commands


def test_the_reference_names_every_flag_and_config_key():
    import argparse

    from spikedriven.cli import build_parser
    from spikedriven.config.schema import FIELDS

    pages = generator().pages()
    commands, config = pages["reference/commands.md"], pages["reference/config.md"]
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in subcommands.items():
        assert f"\n## {name}\n" in commands, name
        own = commands.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                if option in ("-h", "--help") or action.help == argparse.SUPPRESS:
                    continue
                assert f"`{option}`" in own or f"`{option}`" in config, f"{name} {option}"
    train = subcommands["train"]
    shown = [o for a in train._actions if a.help != argparse.SUPPRESS for o in a.option_strings]
    assert len(shown) > 100 and all(f"`{o}`" in commands + config for o in shown if o not in ("-h", "--help"))
    for field in FIELDS:
        assert f"| `{field}`" in config, field


# ---------------------------------------------------------------- snippets


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The README's demo training, tiny."""
    from spikedriven.cli import main

    assert DEMO_TRAIN in {line for _, line, _ in command_lines()}
    run = tmp_path_factory.mktemp("demo") / "run"
    argv = shlex.split(DEMO_TRAIN)[1:]
    argv[argv.index("conf/digits/demo.yml")] = str(ROOT / "conf/digits/demo.yml")
    assert main([*argv, *TINY, "--output", str(run)]) == 0
    return run


def test_every_python_snippet_runs(demo_run, tmp_path, monkeypatch):
    """Each ```python block of README.md and docs/, run as written from a folder that holds what it names
    (best.pth.tar, my-export/); what a snippet registers (a neuron, a dataset) is unregistered after."""
    from spikedriven.data.registry import DATASETS
    from spikedriven.export import export_run
    from spikedriven.neurons import NEURONS

    snippets = blocks("python")
    assert len(snippets) >= 4
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.pth.tar").write_bytes((demo_run / "best.pth.tar").read_bytes())
    export_run(demo_run, tmp_path / "my-export")
    for path, code in snippets:
        neurons, datasets = dict(NEURONS), dict(DATASETS)
        try:
            if "spikedriven.load_checkpoint(model" in code:  # the From Python snippet loads a full-size sdt
                import spikedriven
                import timm

                model = timm.create_model("sdt", num_classes=10, spike_mode="if_soft", v_threshold=1.0)
                spikedriven.save_checkpoint("best.pth.tar", {"state_dict": model.state_dict(),
                                                             "model_args": model.model_args})
            exec(compile(code, str(path), "exec"), {"__name__": "snippet"})
        finally:
            NEURONS.clear(), NEURONS.update(neurons)
            DATASETS.clear(), DATASETS.update(datasets)


def test_the_new_dataset_example_trains(tmp_path):
    from docs_text import block_with
    from spikedriven.config import load_config
    from spikedriven.data.registry import DATASETS

    before = dict(DATASETS)
    try:
        exec(block_with("python", "register_dataset"), {"__name__": "snippet"})
        cfg = load_config(str(ROOT / "conf/digits/demo.yml"), {"dataset": "toy/stripes", "num_classes": 2})
        train, test = DATASETS["toy/stripes"].datasets(cfg)
        assert len(train) == 512 and len(test) == 128
    finally:
        DATASETS.clear(), DATASETS.update(before)


# ---------------------------------------------------------------- command lines


def test_every_command_line_parses(capsys):
    """Every `spikedriven ...`, `python train.py ...` and `python firing_num.py ...` line of the docs' shell
    blocks is accepted by the real parser; flags of a --plugins neuron must be that neuron's settings."""
    from spikedriven.cli import build_parser

    plugin_flags = {"--" + name.replace("_", "-") for _, code in blocks("python")
                    for name in re.findall(r'"(\w+)": Param\(', code)}
    lines = command_lines()
    assert len(lines) >= 30
    parser = build_parser()
    for where, line, argv in lines:
        try:
            _, unknown = parser.parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `{line}` does not parse: {capsys.readouterr().err}")
        flags = [w for w in unknown if w.startswith("-")]
        assert not flags or ("--plugins" in argv and set(flags) <= plugin_flags), f"{where}: `{line}`: {unknown}"


def test_the_demo_commands_run(demo_run, tmp_path, monkeypatch, capsys):
    """The demo's evaluation runs as documented, and the digits study is planned as documented."""
    from spikedriven.cli import main

    documented = {line for _, line, _ in command_lines()}
    assert {DEMO_EVAL, DIGITS_STUDY} <= documented
    monkeypatch.chdir(ROOT)
    evaluation = shlex.split(DEMO_EVAL.replace("output/train/<run>", str(demo_run)))[1:]
    assert main(evaluation) == 0
    assert (demo_run / "eval_best" / "metrics.json").exists()
    # the documented study is planned as written (its training and --report-only are test_study's)
    study = [*shlex.split(DIGITS_STUDY)[1:], "--study-dir", str(tmp_path / "study"), "--dry-run"]
    monkeypatch.setattr("spikedriven.study.cost.probe_epoch", lambda cfg: (1.0, "a stand-in for the probe"))
    assert main(study) == 0
    out = capsys.readouterr().out  # 2 models x (lif at 1.0, if_soft at 0.8, 1.0, 1.2) x 2 seeds
    assert sum(line.startswith("pending") for line in out.splitlines()) == 16 and "16 runs" in out
