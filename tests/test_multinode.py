"""One run over two "nodes": two torchrun launchers meeting at a c10d rendezvous, as on a cluster."""

import os
import re
import socket
import subprocess
import sys

from helpers import DEMO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_nodes_at_a_c10d_rendezvous_train_one_run(tmp_path):
    port, run = _free_port(), tmp_path / "run"
    train = ["-m", "spikedriven", "train", "-c", DEMO, "--epochs", "1", "--warmup-epochs", "0", "--cooldown-epochs",
             "0", "--embed-dim", "16", "--num-heads", "2", "--workers", "0", "--device", "cpu", "--output", str(run)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--rdzv-backend", "c10d",
                               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test", *train],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outs = [n.communicate(timeout=400) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), [o[1][-2000:] for o in outs]
    assert (run / "results.json").is_file()
    # one run: each of the two processes makes half of the 44 steps one process makes per epoch
    steps = {int(n) for n in re.findall(r"step \d+/(\d+)", (run / "log.txt").read_text())}
    assert steps == {22}
