"""hsbcala's Slurm launcher: hydra-submitit-launcher's SlurmLauncher with a dry run, a clear sbatch refusal and
reports of failed jobs. Registered as ``hydra/launcher: hsbcala_slurm`` (see ``config.py``); Hydra finds it because
``hydra_plugins`` is a namespace package that Hydra scans for plugins."""
