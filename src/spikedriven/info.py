"""``spikedriven info``: what this machine and this install can do, as a short plain-text report.

Every answer comes from the code that makes the decision elsewhere (the fused
kernels' ``fused_available``, the datasets' own ``present``, the operation
counter of the analysis), so the report cannot drift from what a run does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import platform
from pathlib import Path

from .errors import ConfigError

__all__ = ["cifar_checksum_mismatches", "dataset_lines", "device_lines", "fused_line", "info_report",
           "model_lines", "version_lines"]

# Distribution name -> module name, for the packages a run depends on.
_PACKAGES = (("torch", "torch"), ("torchvision", "torchvision"), ("timm", "timm"), ("triton", "triton"),
             ("numpy", "numpy"))
# The optional extras: (distribution, module, what needs it). spikingjelly only reads the original code's
# checkpoints, so it is listed only when there; the others say what is missing without them.
_OPTIONAL = (("spikingjelly", "spikingjelly", None), ("submitit", "submitit", "--launcher slurm / local"),
             ("wandb", "wandb", "--log-wandb"))

# torchvision's classes carry the official MD5 sums; reading them there keeps one source of truth.
_TORCHVISION_CIFAR = {"torch/cifar10": "CIFAR10", "torch/cifar100": "CIFAR100"}


def _version(dist: str, module: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    # a source checkout on sys.path has no distribution metadata, yet imports
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), "__version__", "unknown version")


def version_lines() -> list[str]:
    from . import __version__

    lines = [f"spikedriven   {__version__}", f"python        {platform.python_version()}"]
    for dist, module in _PACKAGES:
        lines.append(f"{dist:<14}{_version(dist, module) or 'not installed'}")
    for dist, module, needed_by in _OPTIONAL:
        found = _version(dist, module)
        if found or needed_by:
            lines.append(f"{dist:<14}{found or f'not installed (needed for {needed_by})'}")
    return lines


def device_lines() -> list[str]:
    import torch

    from .runtime import cpu_ids

    lines = []
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        lines.append(f"cuda          available, {count} GPU{'s' if count != 1 else ''} (CUDA {torch.version.cuda})")
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i}       {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        lines.append("cuda          not available")
    mps = getattr(torch.backends, "mps", None)
    lines.append(f"mps           {'available' if mps is not None and mps.is_available() else 'not available'}")
    # the affinity mask, not the machine's total: taskset, Slurm and the study's parallel runs narrow it
    lines.append(f"cpu cores     {len(cpu_ids())} usable by this process")
    lines.append(f"torch threads {torch.get_num_threads()}")
    return lines


def fused_line() -> str:
    """Whether the fused neurons' Triton kernels would run here, asked of ``fused_available`` itself on a
    tensor of the device a run would pick; the reason given when not is read off the same inputs."""
    import torch

    from .neurons import fused

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if fused.fused_available(torch.zeros(1, device=device)):
        where = "CUDA" if device == "cuda" else "CPU under TRITON_INTERPRET=1 (slow; for debugging)"
        return f"fused kernels usable (Triton, on {where})"
    if fused._triton is None:
        if importlib.util.find_spec("triton") is None:
            why = "triton is not installed"
        else:
            why = "triton is installed but the kernels failed to import"
    elif device == "cpu":
        why = "no CUDA device (the Triton kernels run on CUDA tensors; TRITON_INTERPRET=1 runs them on CPU, slowly)"
    else:
        why = "the Triton kernels refuse this device"
    return f"fused kernels not usable: {why}; neurons use the PyTorch loop"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _official_cifar_md5(name: str) -> dict[str, str]:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _TORCHVISION_CIFAR[name])
    sums = dict(cls.train_list + cls.test_list)
    sums[cls.meta["filename"]] = cls.meta["md5"]
    return sums


def cifar_checksum_mismatches(name: str, data_dir: str | Path) -> list[str]:
    """The files of a CIFAR dataset under ``data_dir`` whose MD5 is not the official one (a missing
    file counts: torchvision would refuse the folder for it)."""
    from .data.cifar import CIFAR

    folder = Path(data_dir) / CIFAR[name].folder
    bad = []
    for file, md5 in _official_cifar_md5(name).items():
        path = folder / file
        if not path.is_file():
            bad.append(f"{file} (missing)")
        elif _md5(path) != md5:
            bad.append(file)
    return bad


def dataset_lines(data_dir: str | Path, checksums: bool = False) -> list[str]:
    from .data import DATASETS

    root = Path(data_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the data dir {root} is not a folder")
    head = f"data dir      {root}" + ("" if root.exists() else " (does not exist)")
    lines = [head]
    # aliases map to the same instance: list each dataset once, by its config name
    seen = {}
    for definition in DATASETS.values():
        seen.setdefault(definition.name, definition)
    width = max(len(n) for n in seen)
    for name, definition in sorted(seen.items()):
        if not definition.present(root):
            state = "missing"
        elif checksums and name in _TORCHVISION_CIFAR:
            bad = cifar_checksum_mismatches(name, root)
            state = f"present, checksum mismatch: {', '.join(bad)}" if bad else "present, checksums match"
        else:
            state = "present"
        lines.append(f"  {name:<{width}}  {state}")
    return lines


def model_lines(cfg) -> list[str]:
    import torch

    from .analysis.operations import dense_size
    from .models import architecture_of, build_model

    arch = architecture_of(cfg.model)
    with torch.device("meta"):  # sized from its shapes alone: no weights made, no arithmetic done
        model = build_model(cfg)
    params, per_step = dense_size(model, cfg.in_chans, cfg.img_size)
    settings = ", ".join(f"{k} {v}" for k, v in cfg.model_settings().items())
    return [
        f"model         {cfg.model} ({arch.title}): {settings}",
        f"input         T={cfg.time_steps}, {cfg.in_chans}x{cfg.img_size}x{cfg.img_size}",
        f"parameters    {params:,}",
        (f"dense MACs    {per_step * cfg.time_steps / 1e6:,.2f} M per image ({per_step / 1e6:,.2f} M per time step x "
         f"T={cfg.time_steps}, bias excluded)"),
    ]


def info_report(cfg, config_name: str | None = None, checksums: bool = False) -> str:
    # the data dir is checked first: a bad one should fail before the slower model forward
    datasets = dataset_lines(cfg.data_dir, checksums)
    sections = [
        ("versions", version_lines()),
        ("device", device_lines() + [fused_line()]),
        ("datasets", datasets),
        (f"model ({config_name or 'default config'})", model_lines(cfg)),
    ]
    return "\n\n".join(f"{title}\n" + "\n".join(f"  {line}" for line in lines) for title, lines in sections)


def models_report() -> str:
    """Every registered architecture: its settings with their defaults, and each entry point's size at its
    default input (parameters; dense MACs per image and time step, bias excluded), as ``spikedriven models``."""
    import timm
    import torch

    from .analysis.operations import dense_size
    from .models import ARCHITECTURES

    lines = []
    for arch in ARCHITECTURES.values():
        lines.append(f"{arch.name}: {arch.title}" + (f" [{arch.reference}]" if arch.reference else ""))
        lines.append("  settings (model_args: {KEY: VALUE}, a top-level key, or a flag):")
        for key, param in arch.settings.items():
            default = param.default if not isinstance(param.default, float) else f"{param.default:g}"
            lines.append(f"    --{key.replace('_', '-'):<18} {str(default):<8} {param.doc}")
        lines.append("  entry points (--model), at their default input:")
        width = max(22, *(len(name) for name in arch.sizes))
        labels = {name: arch.size_label(name, arch.defaults(name)).split(" ", 1)[-1] for name in arch.sizes}
        label_width = max(8, *(len(label) for label in labels.values()))
        for name in arch.sizes:
            with torch.device("meta"):  # sized from shapes alone: no weights made, no arithmetic done
                model = timm.create_model(name)
            params, macs = dense_size(model, model.in_chans, model.img_size)
            changed = ", ".join(f"{k} {v}" for k, v in arch.fixed(name).items())
            lines.append(f"    {name:<{width}} {labels[name]:<{label_width}} "
                         f"{model.in_chans}x{model.img_size}x{model.img_size}, T={model.time_steps}, "
                         f"{model.num_classes} classes: {params:,} parameters, {macs / 1e6:,.2f} M MACs per step"
                         + (f" ({changed})" if changed else ""))
        spec = getattr(model, "default_neuron", None)
        if spec is not None:  # a family built around one neuron: what it runs when none is given
            settings = ", ".join(f"{k} {v}" for k, v in spec.params.items())
            lines.append(f"  default neuron (when none is given): {spec.mode} ({settings})")
        lines.append("")
    lines.append("Neurons are passed in to every model: --spike-mode (spikedriven neurons lists them).")
    return "\n".join(lines)
