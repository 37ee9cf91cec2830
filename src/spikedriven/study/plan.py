"""A study's plan: the grid of (model, neuron, threshold, seed) runs, what each evaluation measures, and the
study's folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


from ..config import Config, parse_key_values
from ..errors import ConfigError
from ..neurons import neuron_class


def neuron_title(mode: str) -> str:
    return neuron_class(mode).title or mode


def _takes_threshold(mode: str) -> bool:
    return "v_threshold" in neuron_class(mode).settings()


def setting_label(mode: str, v_threshold: Optional[float], model: Optional[str] = None) -> str:
    """'IF, soft reset u_th=1', with the model in front when a study compares several."""
    neuron = neuron_title(mode) + ("" if v_threshold is None else f" u_th={v_threshold:g}")
    return neuron if model is None else f"{model}: {neuron}"


Variant = tuple  # ((config key, value), ...): the values of a study's --vary axes for one run


def variant_text(variant: Variant) -> str:
    """'rpe_mode=linear encoding=rate'; '' for none."""
    return " ".join(f"{key}={value}" for key, value in variant)


@dataclass(frozen=True)
class PlannedRun:
    model: str
    mode: str
    v_threshold: Optional[float]  # None: the neuron has no threshold
    seed: int
    variant: Variant = ()

    @property
    def legacy_name(self) -> str:
        """The folder name of earlier versions, which named no model."""
        threshold = "" if self.v_threshold is None else f"-uth{self.v_threshold:g}"
        return f"{self.mode}{threshold}-seed{self.seed}"

    @property
    def name(self) -> str:
        varied = "".join(f"-{key}={value}" for key, value in self.variant)
        return f"{self.model}{varied}-{self.legacy_name}"

    @property
    def group(self) -> str:
        """What the tables call the model: the model, and the values of the varied keys ('sdt rpe_mode=linear')."""
        return f"{self.model} {variant_text(self.variant)}" if self.variant else self.model

    @property
    def setting(self) -> tuple[str, str, Optional[float]]:
        return self.group, self.mode, self.v_threshold


def parse_vary(items: Sequence[str]) -> list[tuple[str, list]]:
    """``--vary KEY=V1,V2,...`` (repeatable): each key and its values, each value a YAML scalar; the grid is
    every combination of them."""
    axes = []
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ConfigError(f"--vary takes KEY=V1,V2,... such as rpe_mode=conv,linear, got {item!r}")
        if key in ("spike_mode", "v_threshold", "seed", "model", "output"):
            raise ConfigError(f"--vary {key}: the study varies it itself; use --modes, --thresholds, --seeds or "
                              "--models")
        if key in (k for k, _ in axes):
            raise ConfigError(f"--vary names {key} twice; give all its values in one --vary {key}=V1,V2")
        values = [parse_key_values([f"{key}={v.strip()}"], "--vary")[key] for v in text.split(",") if v.strip()]
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--vary {item}: a value is given twice")
        axes.append((key, values))
    return axes


def variants(axes: Sequence[tuple[str, list]]) -> list[Variant]:
    """Every combination of the axes' values, the first axis slowest; [()] without axes."""
    combos: list[Variant] = [()]
    for key, values in axes:
        combos = [combo + ((key, value),) for combo in combos for value in values]
    return combos


@dataclass(frozen=True)
class EvalPlan:
    """What each run's evaluation measures beyond accuracy: the energy models (with their constants,
    in pJ) and whether inference is timed."""

    energy: tuple[str, ...] = ("sdt",)
    energy_constants: tuple[tuple[str, float], ...] = ()
    speed: bool = False

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(["sdt", *self.energy]))

    def eval_flags(self) -> list[str]:
        flags = ["--energy", ",".join(self.models)]
        if self.energy_constants:
            flags += ["--energy-constants", *(f"{k}={v!r}" for k, v in self.energy_constants)]
        return flags + (["--speed"] if self.speed else [])

    def kwargs(self) -> dict:
        return dict(energy=self.models, energy_constants=dict(self.energy_constants), speed=self.speed)

    def satisfied_by(self, metrics: dict) -> bool:
        """Whether an evaluation already measured everything this plan asks for, with these constants."""
        from ..analysis import resolve_energy_models

        energy = metrics.get("energy") or {}
        for model, constants in resolve_energy_models(self.models, dict(self.energy_constants)):
            if model.name not in energy or energy[model.name].get("constants_pj") != constants:
                return False
        return not self.speed or bool(metrics.get("speed"))


@dataclass(frozen=True)
class Baseline:
    """The setting every other is compared with: a neuron (``mode``, ``v_threshold``) in the same model and
    variant, or a value of a varied key (``variant``: ((key, value),)) with the same neuron."""

    mode: Optional[str] = "lif"
    v_threshold: Optional[float] = 1.0
    variant: Variant = ()

    def setting_for(self, run: PlannedRun) -> tuple[str, str, Optional[float]]:
        """The setting that ``run``'s setting is compared with."""
        if not self.variant:
            return PlannedRun(run.model, self.mode, self.v_threshold, run.seed, run.variant).setting
        replaced = dict(run.variant)
        replaced.update(self.variant)
        return PlannedRun(run.model, run.mode, run.v_threshold, run.seed, tuple(replaced.items())).setting

    @property
    def text(self) -> str:
        """'LIF u_th=1 in the same model', or 'rpe_mode=conv with the same neuron'."""
        if self.variant:
            return f"{variant_text(self.variant)} with the same neuron"
        return f"{setting_label(self.mode, self.v_threshold)} in the same model"


def parse_baseline(text: Optional[str], axes: Sequence[tuple[str, list]] = ()) -> tuple[Baseline, bool]:
    """``--baseline MODE[:U_TH]`` or, in a study with ``--vary``, ``KEY=VALUE``, as (baseline, given). Default:
    the first value of the first varied key, or else LIF at u_th 1, each model compared with it in that model."""
    if text is None:
        if axes:
            key, values = axes[0]
            return Baseline(None, None, ((key, values[0]),)), False
        return Baseline(), False
    if "=" in text:
        key, value = next(iter(parse_key_values([text], "--baseline").items()))
        values = dict(axes).get(key)
        if values is None:
            raise ConfigError(f"--baseline {text} names {key}, which the study does not vary"
                              + (f"; it varies {', '.join(k for k, _ in axes)}" if axes else " (no --vary given)"))
        if value not in values:
            raise ConfigError(f"--baseline {text}: {key} takes the values {', '.join(map(str, values))} in this study")
        return Baseline(None, None, ((key, value),)), True
    mode, _, threshold = text.partition(":")
    neuron_class(mode.strip())  # an unknown name fails here, with the list of neurons
    if not threshold:
        return Baseline(mode.strip(), 1.0 if _takes_threshold(mode.strip()) else None), True
    try:
        return Baseline(mode.strip(), float(threshold)), True
    except ValueError:
        raise ConfigError(f"--baseline takes MODE, MODE:U_TH such as if_soft:1.0, or KEY=VALUE of a --vary key, "
                          f"got {text!r}") from None


_KIND_WORDS = {float: ("numbers", "0.8,1.0,1.2"), int: ("whole numbers", "1,2,3")}


def parse_list(text: str, kind, what: str) -> list:
    values = []
    for word in (v.strip() for v in text.split(",")):
        try:
            values += [kind(word)] if word else []
        except ValueError:
            noun, example = _KIND_WORDS.get(kind, ("values", "a,b"))
            raise ConfigError(f"{what} must be a comma-separated list of {noun} such as {example}, got {text!r} "
                              f"({word!r} is not one)") from None
    if not values:
        raise ConfigError(f"{what} is empty")
    return values


def parse_sets(items: Sequence[str]) -> dict:
    """``--set key=value`` pairs; values are read as YAML scalars (``0.5``, ``true``, ``[1, 1]``)."""
    return parse_key_values(items, "--set")


def split_thresholds(modes: list[str], thresholds: Optional[str], lif_thresholds: Optional[str]) -> tuple[list, list]:
    """The thresholds of the non-leaky modes and of the leaky ones (lif, lif_soft, plif); a list given for modes
    the study does not run is refused (it would be dropped without a word)."""
    leaky = [m for m in modes if _takes_threshold(m) and neuron_class(m).leaky]
    others = [m for m in modes if _takes_threshold(m) and not neuron_class(m).leaky]
    if thresholds is not None and not others:
        raise ConfigError(f"--thresholds {thresholds} set the thresholds of the non-leaky modes (if, if_soft, ...), and "
                          f"--modes {','.join(modes)} holds none; the leaky modes' thresholds are --lif-thresholds "
                          f"(default {DEFAULT_LIF_THRESHOLDS})")
    if lif_thresholds is not None and not leaky:
        raise ConfigError(f"--lif-thresholds {lif_thresholds} set the thresholds of the leaky modes (lif, lif_soft, "
                          f"plif), and --modes {','.join(modes)} holds none; the other modes' thresholds are "
                          f"--thresholds (default {DEFAULT_THRESHOLDS})")
    return (parse_list(thresholds or DEFAULT_THRESHOLDS, float, "--thresholds"),
            parse_list(lif_thresholds or DEFAULT_LIF_THRESHOLDS, float, "--lif-thresholds"))


def check_devices(devices: list[str]) -> list[str]:
    """``--devices``: CUDA GPU ids that exist here, or ``cpu`` entries (one CPU run each)."""
    import torch

    gpus = [d for d in devices if d != "cpu"]
    if any(not d.isdigit() for d in gpus):
        raise ConfigError(f"--devices takes GPU ids (0,1,...) or cpu entries, got {','.join(devices)}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and not count:
        raise ConfigError(f"--devices {','.join(devices)} names CUDA GPUs, and this machine has no CUDA GPU; give cpu "
                          "entries (--devices cpu,cpu trains two runs at once on the CPUs) or leave --devices out")
    missing = [d for d in gpus if int(d) >= count]
    if missing:
        raise ConfigError(f"--devices names GPU {', '.join(missing)}, and this machine has {count} (ids 0-{count - 1})")
    return devices


def plan_runs(models: list[str], modes: list[str], thresholds: list[float], lif_thresholds: list[float],
              seeds: list[int], axes: Sequence[tuple[str, list]] = ()) -> list[PlannedRun]:
    runs = []
    for model in models:
        for variant in variants(axes):
            for mode in modes:
                if not _takes_threshold(mode):
                    mode_thresholds = [None]
                else:
                    mode_thresholds = lif_thresholds if neuron_class(mode).leaky else thresholds
                for thr in mode_thresholds:
                    runs.extend(PlannedRun(model, mode, None if thr is None else float(thr), seed, variant)
                                for seed in seeds)
    return runs


def split_cpus(cpus: list[int], parts: int) -> list[list[int]]:
    """``parts`` contiguous shares of ``cpus``, as equal as they come; with fewer CPUs than parts, every part gets all."""
    if len(cpus) < parts:
        return [list(cpus)] * parts
    size, extra = divmod(len(cpus), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [list(cpus[bounds[i]:bounds[i + 1]]) for i in range(parts)]


DEFAULT_THRESHOLDS, DEFAULT_LIF_THRESHOLDS, DEFAULT_MODES = "0.8,1.0,1.2", "1.0", "lif,if,if_soft"


def size_text(cfg: Config) -> str:
    """The run's model and size spelled out: 'sdt, depth 1, width 64'."""
    from ..models import architecture_of

    return architecture_of(cfg.model).size_text(cfg.model, cfg.model_settings())


def group_text(cfg: Config, run: PlannedRun) -> str:
    """A run's model, size and varied values spelled out: 'sdt, depth 1, width 64, rpe_mode=linear'."""
    return ", ".join(filter(None, (size_text(cfg), variant_text(run.variant))))


def default_study_dir(config_path: Optional[str], cfg: Config) -> Path:
    stem = Path(config_path).stem if config_path else "defaults"
    return Path("output/study") / f"{cfg.dataset.split('/')[-1]}-{stem}"
