"""track: every MLflow call, and what tracking needs without MLflow.

``tracking`` (training runs, evaluation runs, comparisons, Slurm accounting, the store), ``info`` (store URI and
check, params, tags, the run note, dataset digests, the job's CPU/RSS; no ``import mlflow``) and ``provenance``
(pip freeze, modules, the git commit). ``import mlflow`` appears in this wing only. Imports: core, engines,
modeldir, data, config.
"""
