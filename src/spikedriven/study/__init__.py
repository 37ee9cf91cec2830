"""The neuron-model study: a grid of (neuron, threshold, seed) runs, trained, evaluated and tabulated.

    plan.py     the grid, what each evaluation measures, the study folder
    runner.py   run_study: the runs' folders and state, training them inline, on several devices, or on Slurm
    slurm.py    the Slurm job array: submitit, or an sbatch script
    tables.py   results.csv / .md / .tex, one row per setting over its seeds
    figures.py  curves.png, firing.png, tradeoff.png
"""
