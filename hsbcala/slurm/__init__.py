"""Slurm: what hsbcala adds to hydra-submitit-launcher and submitit. It never schedules anything itself.

Submission, job arrays and requeue on walltime are the plugin's and submitit's. ``hydra_plugins/hsbcala_launcher``
subclasses the plugin's ``SlurmLauncher`` and calls in here for what the plugin lacks. Two modules, one per side:

- :mod:`hsbcala.slurm.job` runs where the training runs (inside the Slurm job): the ``job(cfg)`` hook around
  :func:`hsbcala.train.run.run` (refusal of a Slurm cluster without ``-m``, data staging to the node's RAM disk,
  the job's accounting handed to MLflow at the end), the requeue notes and the last-walltime guard;
- :mod:`hsbcala.slurm.launch` runs on the login node, in the launcher: the sbatch preview of a dry run, sbatch's
  refusal as one line, the MLflow store prepared before a job array, waiting (squeue) and failed-job reports.

Every MLflow call of both is in the ``track`` wing (:mod:`hsbcala.track.store`, :mod:`hsbcala.track.tracking`). Nothing is re-exported here: import the module you need.
"""
