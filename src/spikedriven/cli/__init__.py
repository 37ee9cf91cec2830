"""The ``spikedriven`` command line: one entry point, one subcommand per task.

Errors meant for the user (``SpikedrivenError``) print one sentence and exit with status 2; ``--debug``
shows the traceback instead.

    main.py        the parser, the entry point, what an error or a Ctrl-C prints
    run.py         train, eval, export
    study.py       study, compare
    runs.py        runs-table (the published table regenerated)
    tools.py       neurons, encodings, models, info, completion
    completion.py  the shell completion script (shtab)
    common.py      what every subcommand shares
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
