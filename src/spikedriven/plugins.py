"""``--plugins``: Python files or modules of one's own that register neurons, surrogates, encodings or models.

A run's config records its plugins (a file as its absolute path), so evaluation, comparison, resuming and
the study import them again on their own; the command line loads them before building its parser, so that
their settings get flags.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError
from .neurons.registry import NEURONS
from .neurons.surrogates import SURROGATES

__all__ = ["load_plugins", "plugin_key"]

_PLUGINS: dict[str, int] = {}  # plugin (resolved path or module name) -> what it registered


def plugin_key(plugin: str) -> str:
    """How a plugin is recorded: a file as its absolute path (so another folder finds it), a module by name."""
    path = Path(plugin).expanduser()
    return str(path.resolve()) if path.suffix == ".py" or path.is_file() else plugin


def _registered() -> int:
    """How many neurons, surrogates, encodings and models are registered: a plugin must add to it."""
    from .encodings import ENCODINGS
    from .models.registry import ARCHITECTURES

    return len(NEURONS) + len(SURROGATES) + len(ENCODINGS) + len(ARCHITECTURES)


def load_plugins(plugins: Sequence[str]) -> None:
    """Import each plugin (a ``.py`` file or a module name) once; each must register a neuron, a surrogate, an
    encoding or a model."""
    for plugin in plugins:
        key = plugin_key(plugin)
        if key in _PLUGINS:
            continue
        before = _registered()
        _import_plugin(plugin, key)
        added = _registered() - before
        if not added:
            raise ConfigError(
                f"plugin {plugin} registered no neuron, surrogate, encoding or model; decorate a SpikingNeuron "
                "subclass with @register_neuron (from spikedriven.neurons), an Encoding subclass with "
                "@register_encoding (spikedriven.encodings), or register_architecture a model (spikedriven.models)"
            )
        _PLUGINS[key] = added


def _import_plugin(plugin: str, key: str) -> None:
    """Import the plugin ``plugin`` (recorded as ``key``), any failure of it one sentence."""
    path = Path(key)
    try:
        if path.suffix == ".py" or path.is_file():
            _import_file(plugin, key, path)
        else:
            importlib.import_module(key)
    except ConfigError:
        raise
    except ModuleNotFoundError as e:
        if e.name == key.split(".")[0]:
            raise ConfigError(f"plugin {plugin} is neither a .py file nor an importable module") from None
        raise ConfigError(f"plugin {plugin} failed to import: {type(e).__name__}: {e}") from None
    except Exception as e:  # the plugin's own code: any error it raises is the plugin's
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"plugin {plugin} failed to import: {type(e).__name__}: {first}") from None


def _import_file(plugin: str, key: str, path: Path) -> None:
    """Run a plugin file as a module of its own, named after the file and its path (so that two files of one
    name are two modules); a file that fails is not left in ``sys.modules``."""
    if not path.is_file():
        raise ConfigError(f"plugin {plugin} does not exist")
    if path.suffix != ".py":  # importlib has no loader for another suffix (its spec is None)
        raise ConfigError(f"plugin {plugin} is not a Python file: give a .py file or a module name")
    module_name = f"spikedriven_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
