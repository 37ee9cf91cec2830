"""Nothing a user ran is silently overwritten, changed or misreported.

One test per fault found by using the tool as a new user would (2 CPU cores,
the digits demo): each failed before its fix. Tables of refusals first, then
the behaviours that replace each silent change, then the printed commands.
"""

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spikedriven.engine import checkpoint as ckpt_io
from spikedriven.engine import loop
from spikedriven.engine import trainer
from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.errors import CheckpointError
from spikedriven.models import build_model

from helpers import DEMO, assert_same_run, read_summary, stop_after_steps

ROOT = Path(__file__).resolve().parents[1]
# 44 steps an epoch (1,437 images, batch 32, last partial batch dropped); a second and a half an epoch
SMALL = ["--embed-dim", "16", "--num-heads", "2", "--epochs", "2", "--warmup-epochs", "0", "--log-interval", "10"]
STEPS_PER_EPOCH = 1437 // 32


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_commands(text: str) -> list[str]:
    """Commands a message tells the user to run: `in backquotes`, or after 'resume with: ' to the end of the line."""
    found = re.findall(r"`((?:spikedriven|python) [^`]+)`", text)
    found += [m.strip() for m in re.findall(r"resume with: (.+)$", text, re.MULTILINE)]
    return list(dict.fromkeys(found))


def run_printed(command: str) -> int:
    """Run a printed command in this process (as `spikedriven ...` would)."""
    argv = shlex.split(command)
    assert argv[0] == "spikedriven", command
    return main(argv[1:])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished if_soft digits run of 2 epochs, and the evaluation of its final model."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--spike-mode", "if_soft", "--output", str(run)]) == 0
    assert main(["eval", "--checkpoint", str(run / "last.pth.tar")]) == 0
    return run


@pytest.fixture
def run_copy(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _yaml_with(run: Path, **changes) -> str:
    text = Path(DEMO).read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.MULTILINE)
        assert n == 1, key
    path = run.parent / "changed.yml"
    path.write_text(text)
    return str(path)


def _truncated(run: Path) -> str:
    path = run.parent / "truncated.pth.tar"
    data = (run / "last.pth.tar").read_bytes()
    path.write_bytes(data[: len(data) * 99 // 100])
    return str(path)


# ------------------------------------------------------------------ refusals

REFUSED = [
    # (id, args from the run folder, words the one sentence must hold)
    ("fresh train into a finished run", lambda r: ["train", "-c", DEMO, *SMALL, "--output", str(r)],
     ["already holds a finished run", "best top-1", "--resume", "--overwrite"]),
    ("resume with another neuron", lambda r: ["train", "--resume", str(r / "last.pth.tar"), "--spike-mode", "lif"],
     ["spike_mode='lif' (run: 'if_soft')", "--no-resume-opt"]),
    ("resume with another T", lambda r: ["train", "--resume", str(r), "--time-steps", "3"], ["time_steps=3 (run: 2)"]),
    ("resume with another learning rate", lambda r: ["train", "--resume", str(r), "--lr", "0.1"], ["lr=0.1"]),
    ("resume with a config file of other settings",
     lambda r: ["train", "-c", _yaml_with(r, time_steps=3, lr=0.01), "--resume", str(r / "last.pth.tar")],
     ["time_steps=3", "lr=0.01", "changed.yml"]),
    ("resume ending before what was trained", lambda r: ["train", "--resume", str(r), "--epochs", "1"],
     ["already trained 2 epochs"]),
    ("resume into another output folder",
     lambda r: ["train", "--resume", str(r / "last.pth.tar"), "--output", str(r.parent / "elsewhere")],
     ["continues in", "--no-resume-opt"]),
    ("fp16 on a CPU", lambda r: ["train", "-c", DEMO, *SMALL, "--amp", "fp16", "--output", str(r.parent / "fp16")],
     ["fp16", "CUDA", "bf16"]),
    ("eval fp16 on a CPU", lambda r: ["eval", "--checkpoint", str(r / "last.pth.tar"), "--amp", "fp16"], ["fp16", "CUDA"]),
    ("eval a text file", lambda r: ["eval", "--checkpoint", DEMO], ["is not a PyTorch checkpoint", "text"]),
    ("eval a truncated checkpoint", lambda r: ["eval", "--checkpoint", _truncated(r)], ["is truncated or damaged"]),
    ("eval a folder without checkpoints", lambda r: ["eval", "--checkpoint", str(r.parent)], ["no last.pth.tar or best.pth.tar"]),
    ("study: IF thresholds but only LIF", lambda r: ["study", "-c", DEMO, "--modes", "lif", "--thresholds", "0.8,1.2", "--dry-run"],
     ["--thresholds 0.8,1.2", "--lif-thresholds"]),
    ("study: LIF thresholds but no LIF", lambda r: ["study", "-c", DEMO, "--modes", "if", "--lif-thresholds", "0.9", "--dry-run"],
     ["--lif-thresholds", "--thresholds"]),
    ("study: a GPU id on a machine without GPUs", lambda r: ["study", "-c", DEMO, "--modes", "if", "--devices", "0", "--dry-run"],
     ["--devices 0", "no CUDA GPU", "cpu"]),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_in_one_sentence(case, run_copy, capsys):
    name, make_args, words = case
    if "GPU id" in name and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()}
    code, _, err = run_cli(make_args(run_copy), capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "weights_only" not in err and "internal" not in err, err  # no advice of torch's meant for its own users
    for word in words:
        assert word in err, err
    assert before == {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()}, "a refused command changed the run"


# ---------------------------------------------------------- what happens instead


def test_overwrite_moves_the_old_run_aside(run_copy, capsys):
    best = (run_copy / "best.pth.tar").read_bytes()
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--epochs", "1", "--output", str(run_copy), "--overwrite"], capsys)
    assert code == 0, err
    (aside,) = run_copy.parent.glob("run.replaced-*")
    assert (aside / "best.pth.tar").read_bytes() == best and len(read_summary(aside)) == 2
    assert len(read_summary(run_copy)) == 1
    assert f"moved the run that was in {run_copy} to {aside}" in (run_copy / "log.txt").read_text()
    assert not list(run_copy.glob("events.out.tfevents*"))[1:], "old TensorBoard files left beside the new ones"


def test_resume_applies_changeable_settings_and_replans_the_schedule(finished, run_copy, capsys):
    from timm.scheduler import create_scheduler_v2

    code, _, err = run_cli(["train", "--resume", str(run_copy), "--epochs", "4", "--log-interval", "5"], capsys)
    assert code == 0, err
    log = (run_copy / "log.txt").read_text()
    assert "epochs 2 -> 4: schedule re-planned from epoch 2" in log and "log_interval 10 -> 5" in log
    assert f"output {finished} -> {run_copy} (the run folder was moved)" in log
    cfg = load_config(run_copy / "config.yaml")
    assert (cfg.epochs, cfg.log_interval, cfg.output) == (4, 5, str(run_copy))
    rows = read_summary(run_copy)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    # the lr of the added epochs is that of timm's scheduler built for 4 epochs (it ran flat at min_lr before)
    optimizer = torch.optim.AdamW(build_model(cfg).parameters(), lr=cfg.lr)
    scheduler, total = create_scheduler_v2(optimizer, sched="cosine", num_epochs=4, min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr,
                                           warmup_epochs=cfg.warmup_epochs, cooldown_epochs=cfg.cooldown_epochs, warmup_prefix=False)
    assert total == 4
    for row in rows[2:]:
        scheduler.step(int(row["epoch"]))
        assert float(row["lr"]) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
    assert float(rows[2]["lr"]) > 2 * cfg.min_lr


def _in_earlier_names(run: Path) -> None:
    """Rewrite a run folder as an earlier version wrote it: the model's settings as top-level keys of its config
    (no model_args, no models), in the study's names layer / dim / in_channels; the model's T in the
    checkpoints' model_args."""
    import yaml

    old = {"depth": "layer", "embed_dim": "dim", "in_chans": "in_channels"}
    settings = {k: v for k, v in ckpt_io.read_checkpoint(run / "last.pth.tar")["model_args"].items()
                if k in ("depth", "embed_dim", "num_heads", "mlp_ratio", "pooling_stat", "attn_v_threshold", "dvs_mode")}

    def earlier(config: dict) -> dict:
        flat = {k: v for k, v in config.items() if k not in ("model_args", "models")}
        return {old.get(k, k): v for k, v in {**flat, **settings}.items()}

    for name in ("last.pth.tar", "best.pth.tar"):
        ckpt = ckpt_io.read_checkpoint(run / name)
        ckpt["config"] = earlier(ckpt["config"])
        ckpt["model_args"] = {("T" if k == "time_steps" else k): v for k, v in ckpt["model_args"].items()}
        torch.save(ckpt, run / name)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(earlier(config), sort_keys=False))


def test_a_run_folder_of_an_earlier_version_resumes_and_evaluates(run_copy, capsys):
    _in_earlier_names(run_copy)
    assert "\ndim: 16" in (run_copy / "config.yaml").read_text()
    code, out, err = run_cli(["eval", "--checkpoint", str(run_copy / "last.pth.tar"), "--eval-output",
                              str(run_copy / "eval_again")], capsys)
    assert code == 0, err
    again = json.loads((run_copy / "eval_again" / "metrics.json").read_text())
    assert again["top1"] == json.loads((run_copy / "eval_last" / "metrics.json").read_text())["top1"]
    # a contradicting T is still caught in a checkpoint that records it as T
    code, _, err = run_cli(["eval", "--checkpoint", str(run_copy / "last.pth.tar"), "--time-steps", "3"], capsys)
    assert code == 2 and "time_steps=3" in err
    code, _, err = run_cli(["train", "--resume", str(run_copy), "--epochs", "3"], capsys)
    assert code == 0, err
    assert [r["epoch"] for r in read_summary(run_copy)] == ["0", "1", "2"]
    text = (run_copy / "config.yaml").read_text()  # the resumed run records today's names, under model_args
    assert "\nmodel_args:\n" in text and "\n  embed_dim: 16" in text and "\ndim:" not in text
    assert ckpt_io.read_checkpoint(run_copy / "last.pth.tar")["model_args"]["time_steps"] == 2


def test_an_overridden_evaluation_has_its_own_folder_and_is_marked(run_copy, tmp_path, capsys):
    real = (run_copy / "eval_last" / "metrics.json").read_text()
    code, out, err = run_cli(["eval", "--checkpoint", str(run_copy / "last.pth.tar"), "--spike-mode", "lif", "--override"], capsys)
    assert code == 0, err
    assert (run_copy / "eval_last" / "metrics.json").read_text() == real
    folder = run_copy / "eval_last-override-spike_mode-lif"
    assert str(folder) in out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["overridden_settings"] == [{"setting": "spike_mode", "checkpoint": "if_soft", "evaluated_with": "lif"}]
    code, out, err = run_cli(["compare", str(run_copy), "--output", str(tmp_path / "cmp")], capsys)
    assert code == 0, err
    # one row per evaluation, the checkpoint and the view it was evaluated in a column of its own
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith(run_copy.parent.name)}
    assert "lif*" in rows["last-override-spike_mode-lif"] and "*" not in rows["last"]
    assert "* evaluated with settings overridden against its checkpoint: spike_mode lif (checkpoint: if_soft)" in out


STUDY = ["study", "--modes", "if", "--thresholds", "1.0", *SMALL]


def test_a_study_notices_that_its_config_file_changed(tmp_path, capsys):
    conf = tmp_path / "study.yml"
    conf.write_text(Path(DEMO).read_text())
    args = [*STUDY, "-c", str(conf), "--study-dir", str(tmp_path / "s")]
    assert main(args) == 0
    conf.write_text(conf.read_text().replace("time_steps: 2", "time_steps: 3").replace("lr: 3.0e-3", "lr: 1.0e-3"))
    code, out, err = run_cli([*args, "--dry-run"], capsys)
    assert code == 0 and re.search(r"^stale +sdt-if-uth1-seed42 \(time_steps 2 -> 3, lr 0\.003 -> 0\.001\)", out, re.M), out
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "sdt-if-uth1-seed42 (time_steps 2 -> 3, lr 0.003 -> 0.001)" in err and "--rerun-stale" in err, err
    code, out, err = run_cli([*args, "--rerun-stale"], capsys)
    assert code == 0, err
    assert "rerunning sdt-if-uth1-seed42: time_steps 2 -> 3, lr 0.003 -> 0.001" in err
    run = tmp_path / "s" / "runs" / "sdt-if-uth1-seed42"
    assert load_config(run / "config.yaml").time_steps == 3
    assert "T = 3" in (tmp_path / "s" / "results.md").read_text()
    assert list((tmp_path / "s" / "runs").glob("sdt-if-uth1-seed42.replaced-*"))  # the old run is kept
    assert f"results: {tmp_path / 's' / 'results.md'}" in err


def test_an_interrupted_study_prints_the_command_that_resumes_it(tmp_path, monkeypatch, capsys):
    args = [*STUDY, "-c", DEMO, "--study-dir", str(tmp_path / "s")]
    monkeypatch.setattr(trainer.StopFlag, "__call__", lambda self: True)
    code, _, err = run_cli(args, capsys)
    assert code == 130
    (command,) = [c for c in printed_commands(err)]
    assert command.startswith("spikedriven study")
    monkeypatch.undo()
    assert run_printed(command) == 0
    assert (tmp_path / "s" / "results.md").is_file()


def test_progress_lines_every_log_interval_steps(finished):
    log = (finished / "log.txt").read_text()
    pattern = r"epoch (\d) \| step (\d+)/(\d+) \| loss \d\.\d{4} \| lr \S+ \| [\d,]+ img/s \| ETA \d+:\d\d:\d\d"
    lines = re.findall(pattern, log)
    assert [(int(e), int(s)) for e, s, _ in lines] == [(e, s) for e in (0, 1) for s in (10, 20, 30, 40)], log
    assert {int(n) for _, _, n in lines} == {STEPS_PER_EPOCH}


def test_the_stop_flag_is_acted_on_at_the_next_step_and_throughput_counts_only_this_process(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    stop_after_steps(monkeypatch, 41)  # not a multiple of log_interval or of any sync period
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(run)], capsys)
    assert code == 130
    ckpt = ckpt_io.read_checkpoint(run / "last.pth.tar")
    assert (ckpt["epoch"], ckpt["step"]) == (0, 41)
    monkeypatch.undo()
    (command,) = printed_commands(err)
    assert run_printed(command) == 0
    row = read_summary(run)[0]
    # 3 steps of 32 images were trained after the resume: the figure is theirs over the time they took
    trained_now = (STEPS_PER_EPOCH - 41) * 32
    assert float(row["images_per_s"]) == pytest.approx(trained_now / float(row["train_seconds"]), rel=0.02)


def test_a_stop_during_evaluation_is_acted_on_there_and_the_run_continues_exactly(finished, tmp_path, monkeypatch, capsys):
    """Evaluating the test set takes minutes on a CPU: a stop requested then is not left waiting for it
    (and for the next epoch's first steps); the epoch's training is saved and the resumed run evaluates it."""
    run = tmp_path / "run"
    evaluating = {"now": False}
    real = trainer.evaluate

    def evaluate(*args, **kwargs):
        evaluating["now"] = True
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    monkeypatch.setattr(trainer.StopFlag, "__call__", lambda self: evaluating["now"])
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--spike-mode", "if_soft", "--output", str(run)], capsys)
    assert code == 130
    ckpt = ckpt_io.read_checkpoint(run / "last.pth.tar")
    assert (ckpt["epoch"], ckpt["step"]) == (0, STEPS_PER_EPOCH) and not read_summary(run)
    monkeypatch.undo()
    (command,) = printed_commands(err)
    assert run_printed(command) == 0
    assert_same_run(finished, run)


def test_a_second_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    calls = {"n": 0}
    original = loop.classification_loss

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == STEPS_PER_EPOCH + 5:  # in epoch 1, after epoch 0 was saved
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "classification_loss", interrupted)
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(run)], capsys)
    assert code == 130 and "Traceback" not in err
    assert "stopped at once" in err and "last checkpoint: after epoch 0" in err, err
    monkeypatch.undo()
    (command,) = printed_commands(err)
    assert run_printed(command) == 0
    assert [r["epoch"] for r in read_summary(run)] == ["0", "1"]


def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    args = ["train", "-c", DEMO, *SMALL, "--output", str(tmp_path / "run")]
    monkeypatch.setattr(trainer, "build_datasets", interrupted)
    code, _, err = run_cli(args, capsys)
    assert code == 130 and "Traceback" not in err and "nothing was trained" in err, err
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    # after the run folder was made: it holds nothing trained, so the same command starts the run there
    monkeypatch.setattr(trainer, "compile_model", interrupted)
    code, _, err = run_cli(args, capsys)
    assert code == 130 and "nothing was trained" in err and (tmp_path / "run" / "log.txt").is_file()
    monkeypatch.undo()
    assert main(args) == 0
    # while Python imports torch, timm and scikit-learn: a KeyboardInterrupt inside an import can leave a
    # half-initialised module that fails later with another error
    for delay in (0.3, 1.0, 2.0):
        proc = subprocess.Popen([sys.executable, "-m", "spikedriven", "train", "-c", DEMO, "--output", str(tmp_path / "r2")],
                                stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "Traceback" not in err and err.count("\n") <= 8, err


# ---------------------------------------------------------- one name, one count


def test_mean_firing_rate_is_one_quantity_in_log_and_eval(finished):
    log = (finished / "log.txt").read_text()
    logged = float(re.findall(r"epoch 1 \|.*mean firing rate (\d\.\d{4})", log)[0])
    metrics = json.loads((finished / "eval_last" / "metrics.json").read_text())
    assert logged == round(metrics["mean_firing_rate"], 4)
    assert "mean firing " not in log.replace("mean firing rate", "")


def test_epochs_are_counted_one_way(finished, tmp_path):
    assert main(["eval", "--checkpoint", str(finished / "best.pth.tar"), "--eval-output", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    results = json.loads((finished / "results.json").read_text())
    assert metrics["checkpoint_epoch"] == results["best_epoch"]
    rows = read_summary(finished)
    assert max(rows, key=lambda r: float(r["eval_top1"]))["epoch"] == str(results["best_epoch"])


def test_eval_takes_a_run_folder(finished, tmp_path, capsys):
    code, out, err = run_cli(["eval", "--checkpoint", str(finished), "--eval-output", str(tmp_path / "e")], capsys)
    assert code == 0, err
    assert f"evaluating {finished / 'last.pth.tar'}" in out
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["checkpoint"] == str(finished / "last.pth.tar")


def test_load_checkpoint_refuses_a_model_with_other_neurons(finished):
    cfg = load_config(finished / "config.yaml", {"spike_mode": "lif"})
    model = build_model(cfg)
    with pytest.raises(CheckpointError, match=r"spike_mode 'if_soft'.*the model has 'lif'"):
        ckpt_io.load_checkpoint(model, finished / "last.pth.tar")
    ckpt_io.load_checkpoint(model, finished / "last.pth.tar", check_settings=False)  # on purpose
    ckpt_io.load_checkpoint(build_model(load_config(finished / "config.yaml")), finished / "last.pth.tar")


def test_debug_shows_the_traceback_and_still_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("dimm: 3\n")
    code, _, err = run_cli(["train", "-c", str(bad), "--debug"], capsys)
    assert code == 2 and "Traceback" in err and "unknown config key 'dimm'" in err


# ------------------------------------------------------------------ plots


@pytest.fixture(scope="module")
def two_setting_study(tmp_path_factory):
    from spikedriven.study.plan import plan_runs
    from spikedriven.study.runner import Study

    folder = tmp_path_factory.mktemp("plots") / "s"
    assert main(["study", "-c", DEMO, "--modes", "if,if_soft", "--thresholds", "1.0", *SMALL, "--study-dir", str(folder)]) == 0
    overrides = {"embed_dim": 16, "num_heads": 2, "epochs": 2, "warmup_epochs": 0, "log_interval": 10}
    return Study(DEMO, overrides, plan_runs(["sdt"], ["if", "if_soft"], [1.0], [1.0], [42]), folder)


def _integer_ticks(ax) -> bool:
    return all(float(t).is_integer() for t in ax.get_xticks())


def test_study_plots_have_integer_epochs_and_no_lines_across_layers(two_setting_study):
    from spikedriven.study.figures import curves_figure, firing_figure

    (curves,) = curves_figure(two_setting_study).axes
    assert _integer_ticks(curves)
    (firing,) = firing_figure(two_setting_study).axes
    assert not [line for line in firing.lines if len(line.get_xdata()) > 1 and line.get_linestyle() not in ("None", "")]


def test_compare_plot_is_titled_honest_and_labelled_briefly(two_setting_study, tmp_path):
    from spikedriven.analysis.compare import compare, compare_figure

    folders = [two_setting_study.eval_dir(r) for r in two_setting_study.runs]
    _, rows = compare(folders)
    fig = compare_figure(rows)
    assert fig.get_suptitle()
    accuracy = fig.axes[0]
    assert accuracy.get_ylim()[0] == 0 or not accuracy.patches, "bars on a cut axis exaggerate the gaps"
    labels = [t.get_text() for t in accuracy.get_xticklabels()]
    assert labels == ["sdt-if-uth1-seed42", "sdt-if_soft-uth1-seed42"]


def test_the_readme_python_snippet_runs(tmp_path, monkeypatch):
    from docs_text import all_text, block_with

    assert "model_best.pth.tar" not in all_text()  # a name this tool never writes
    snippet = block_with("python", "timm.create_model", "SpikeRecorder")  # docs/how-to/export.md
    head, _, _ = snippet.partition("spikedriven.load_checkpoint")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(head, namespace)
    ckpt_io.save_checkpoint("best.pth.tar", {"state_dict": namespace["model"].state_dict()})
    exec(snippet, {})


# ---------------------------------------------------------- printed commands


def test_every_printed_command_works(run_copy, tmp_path, monkeypatch, capsys):
    """The commands the tool tells a user to run, run: each exits 0."""
    # a fresh train into a run folder points at resuming it
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(run_copy)], capsys)
    assert code == 2
    commands = printed_commands(err)
    # a stopped run
    stop_after_steps(monkeypatch, 3)
    code, _, err = run_cli(["train", "-c", DEMO, *SMALL, "--output", str(tmp_path / "stopped")], capsys)
    assert code == 130
    commands += printed_commands(err)
    monkeypatch.undo()
    # a study interrupted between runs
    from spikedriven.analysis import evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", interrupted)
    code, _, err = run_cli([*STUDY, "-c", DEMO, "--study-dir", str(tmp_path / "s")], capsys)
    assert code == 130 and "every finished run is kept" in err
    commands += printed_commands(err)
    monkeypatch.undo()
    assert len(commands) == 3, commands
    for command in commands:
        assert run_printed(command) == 0, command
    assert (tmp_path / "s" / "results.md").is_file()


def test_boolean_flags_may_be_given_bare():
    """The dataset-missing message says "Get it with --download": the bare flag must parse."""
    from spikedriven.cli import build_parser
    from spikedriven.config import overrides_from_args

    args = build_parser().parse_args(["train", "--download", "--tet", "false"])
    cfg = load_config(None, overrides_from_args(args))
    assert cfg.download is True and cfg.tet is False
