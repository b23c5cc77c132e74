"""track: every MLflow call, and what tracking needs without MLflow.

``tracking`` (a training's run), ``evaluation`` (an evaluation's run, the registry's champion, a multirun's
comparison), ``store`` (what they share: the store's errors, asking again, the experiment and its view; the
queries of status and Slurm jobs), ``info`` (store URI and check, params, tags, the run note, dataset digests,
the job's CPU/RSS; no ``import mlflow``) and ``provenance`` (pip freeze, modules, the git commit).
``import mlflow`` appears in this wing only (tests/test_layers.py). Imports: core, engines,
modeldir, data, config.
"""
