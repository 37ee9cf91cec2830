#!/usr/bin/env python
"""The study's entry point, kept so its command lines work:

    python train.py -c conf/cifar10/2_256_300E_t4.yml --model sdt --spike-mode if_soft

Same as ``spikedriven train ...``.
"""

import sys

from spikedriven.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], prog_hint="python train.py"))
