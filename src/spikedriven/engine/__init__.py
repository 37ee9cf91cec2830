"""Running a training: the loop, the run around it, and what it keeps.

    trainer.py     a run, top to bottom: data, model, epochs, checkpoints, results
    loop.py        one training epoch, one evaluation pass
    recipe.py      optimizer, schedule, mixup and loss from timm's factories
    recorder.py    spike recording hooks on the neuron layers
    progress.py    the progress bar, log lines and per-epoch scalars
    tracking.py    where the scalars go: TensorBoard, Weights & Biases
    checkpoint.py  reading (safely) and writing (atomically) checkpoints
    resume.py      which checkpoint a run continues from, and with which settings
    run_folder.py  a run folder: its files, never overwriting one, summary.csv, logging
    run_lock.py    one process per run folder
    signals.py     SIGINT / SIGTERM: save, then stop
    rng.py         every generator's seed and state
    distributed.py torchrun and Slurm process groups
"""
