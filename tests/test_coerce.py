"""``coerce``: every kind of field's accepted words and values, and the sentence for a value it refuses.
(The table pins what the command line and YAML files may give; a few cases are in test_config.py too.)"""

import math

import pytest

from spikedriven.config import coerce
from spikedriven.errors import ConfigError


@pytest.mark.parametrize("name, value, expected", [
    # bool: the words, 0 and 1, and True / False themselves
    ("tet", "true", True), ("tet", " yes ", True), ("tet", "On", True), ("tet", "1", True), ("tet", 1, True),
    ("tet", True, True), ("tet", "false", False), ("tet", "off", False), ("tet", "0", False), ("tet", 0, False),
    ("tet", False, False),
    # a bool that takes auto: auto (and, being optional, none) is None
    ("compile", "auto", None), ("compile", " AUTO ", None), ("compile", "none", None), ("compile", "false", False),
    # int: integer words and integral floats; an optional one takes none, one that takes auto auto too
    ("epochs", "3", 3), ("epochs", " 7 ", 7), ("epochs", 2.0, 2), ("epochs", -1, -1),
    ("workers", "auto", None), ("workers", "none", None), ("workers", "3", 3),
    ("eval_img_size", "none", None), ("eval_img_size", "", None), ("eval_img_size", "3", 3),
    # float: numbers and number words, YAML's 3e-4 (a string to PyYAML) included
    ("lr", "3e-4", 3e-4), ("lr", 1, 1.0), ("lr", "0.5", 0.5), ("lr", 0.0, 0.0),
    ("surrogate_alpha", "none", None), ("surrogate_alpha", "2", 2.0), ("surrogate_alpha", "", None),
    # str: text and numbers as text
    ("dataset", "hard", "hard"), ("dataset", 3, "3"), ("dataset", 0.5, "0.5"), ("dataset", "none", "none"),
    ("output", "none", None), ("output", "x", "x"),
    # list[str]: a list of names, or one string of them separated by commas and/or spaces
    ("plugins", "a,b", ["a", "b"]), ("plugins", "a b", ["a", "b"]), ("plugins", ["a", "b"], ["a", "b"]),
    ("plugins", ("a",), ["a"]), ("plugins", "", []), ("plugins", [], []),
    ("aa_ops", "none", None), ("aa_ops", "a, b ,c", ["a", "b", "c"]),
    # list: numbers, as a list, one string of them or a single number
    ("opt_betas", "none", None), ("opt_betas", ["0.8", "0.9"], [0.8, 0.9]), ("opt_betas", "0.8 0.9", [0.8, 0.9]),
    ("opt_betas", 0.5, [0.5]), ("scale", "1,2", [1.0, 2.0]), ("scale", (1, 2), [1.0, 2.0]), ("scale", 2, [2.0]),
    ("scale", [], []),
    # dict: a mapping of setting names, or key=value words (each value a YAML scalar)
    ("model_args", {"levels": 8}, {"levels": 8}), ("model_args", ["levels=8"], {"levels": 8}),
    ("model_args", "levels=8,x=1", {"levels": 8, "x": 1}), ("model_args", {}, {}),
    ("model_args", ["levels=8", "x=[1, 2]"], {"levels": 8, "x": [1, 2]}),
])
def test_an_accepted_value_is_read_as_its_fields_type(name, value, expected):
    got = coerce(name, value, "src")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name, value, message", [
    ("tet", None, "tet (from src) needs a value of type bool, got nothing"),
    ("tet", "none", "tet (from src) must be true or false, got 'none'"),
    ("tet", 2, "tet (from src) must be true or false, got 2"),
    ("tet", "maybe", "tet (from src) must be true or false, got 'maybe'"),
    ("tet", "auto", "tet (from src) must be true or false, got 'auto'"),
    ("compile", "maybe", "compile (from src) must be true, false or auto, got 'maybe'"),
    ("epochs", None, "epochs (from src) needs a value of type int, got nothing"),
    ("epochs", 1.5, "epochs (from src) must be an integer, got 1.5"),
    ("epochs", True, "epochs (from src) must be an integer, got True"),
    ("epochs", "3.0", "epochs (from src) must be an integer, got '3.0'"),
    ("epochs", "", "epochs (from src) must be an integer, got ''"),
    ("workers", "-x", "workers (from src) must be an integer or auto, got '-x'"),
    ("workers", True, "workers (from src) must be an integer or auto, got True"),
    ("eval_img_size", "auto", "eval_img_size (from src) must be an integer, got 'auto'"),
    ("lr", True, "lr (from src) must be a number, got True"),
    ("lr", "fast", "lr (from src) must be a number, got 'fast'"),
    ("lr", [1], "lr (from src) must be a number, got [1]"),
    ("lr", "nan", "lr (from src) must be a finite number, got 'nan'"),
    ("lr", math.inf, "lr (from src) must be a finite number, got inf"),
    ("dataset", True, "dataset (from src) must be a string, got True"),
    ("dataset", ["a"], "dataset (from src) must be a string, got ['a']"),
    ("plugins", ["a", 1], "plugins (from src) must be a list of names, got ['a', 1]"),
    ("plugins", 3, "plugins (from src) must be a list of names, got 3"),
    ("opt_betas", [0.8, True], "opt_betas (from src) must be a list of finite numbers, got [0.8, True]"),
    ("opt_betas", [math.inf], "opt_betas (from src) must be a list of finite numbers, got [inf]"),
    ("opt_betas", ["x"], "opt_betas (from src) must be a list of numbers, got ['x']"),
    ("opt_betas", "auto", "opt_betas (from src) must be a list of numbers, got ['auto']"),
    ("scale", True, "scale (from src) must be a list of numbers, got True"),
    ("scale", {}, "scale (from src) must be a list of numbers, got {}"),
    ("model_args", {"1bad": 2}, "model_args (from src) must map setting names to values, got {'1bad': 2}"),
    ("model_args", ["bad"], "model_args (from src) takes key=value, got 'bad'"),
    ("model_args", 3, "model_args (from src) must map setting names to values, got 3"),
])
def test_a_refused_value_is_one_sentence_naming_the_key(name, value, message):
    with pytest.raises(ConfigError) as e:
        coerce(name, value, "src")
    assert str(e.value) == message
