"""The typed run configuration: YAML file + command-line flags -> validated ``Config``.

Every field is a YAML key (``batch_size``) and a flag (``--batch-size``). Unknown keys, wrong types and
impossible values are refused before anything starts, with one sentence naming the key.

    schema.py         the Config dataclass: every field, its help, default, role and checks; the lists of
                      settings derived from the roles (RUNTIME_SETTINGS, MODEL_SETTINGS, ...)
    values.py         a value as its field's type (true, none, 1e-3, lists, KEY=VALUE)
    files.py          a YAML file and flags over it -> Config, read and validated once; what a run records
    flags.py          one flag per field, grouped by role
    original_keys.py  the original code's vocabulary: spellings, keys that change nothing, refused keys
"""

from .files import (ResolvedSettings, from_mapping, load_config, load_yaml, recorded_config, requested_values,
                    resolve_settings, save_config)
from .flags import add_config_flags, flag_name, overrides_from_args
from .schema import (AMP_MODES, COMPILE_MODES, FIELDS, MODEL_FIELDS, MODEL_SETTINGS, NEURON_FIELDS, NEURON_SETTINGS,
                     NONFINITE_POLICIES, ROLES, RUNTIME_SETTINGS, SCHEDULE_LENGTH, Config, fields_of)
from .values import coerce, parse_key_values

__all__ = ["AMP_MODES", "COMPILE_MODES", "FIELDS", "MODEL_FIELDS", "MODEL_SETTINGS", "NEURON_FIELDS", "NEURON_SETTINGS",
           "NONFINITE_POLICIES", "ROLES", "RUNTIME_SETTINGS", "SCHEDULE_LENGTH", "Config", "ResolvedSettings",
           "add_config_flags", "coerce", "fields_of", "flag_name", "from_mapping", "load_config", "load_yaml",
           "overrides_from_args", "parse_key_values", "recorded_config", "requested_values", "resolve_settings",
           "save_config"]
