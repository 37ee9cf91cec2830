#!/usr/bin/env python
"""The study's evaluation entry point, kept so its command lines work:

    python firing_num.py -c conf/cifar10/2_256_300E_t4.yml --model sdt --spike-mode if_soft --resume CKPT --no-resume-opt

Same as ``spikedriven eval ...``: accuracy, firing rates, SOPs and energy.
"""

import sys

from spikedriven.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]], prog_hint="python firing_num.py"))
