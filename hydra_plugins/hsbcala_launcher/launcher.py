"""hsbcala's Slurm launcher: a subclass of hydra-submitit-launcher's ``SlurmLauncher``.

Why a subclass and not a launcher of our own: submission, job arrays and requeue on walltime stay exactly the
plugin's and submitit's (the plugin's ``__call__`` runs the Hydra job on the node, its ``checkpoint()`` returns
``DelayedSubmission(self, …)``, which submitit dumps and requeues with ``scontrol requeue`` when
``max_num_timeout > 0``). What the plugin lacks is added around its pieces, with the help of :mod:`hsbcala.slurm`
(``job`` in the job, ``launch`` on the login node):

- ``launch`` (login node): the plugin's ``launch()`` builds the executor, submits and waits in one piece, so it is
  written out here with the same executor set-up, plus
  - ``dry_run=true``: print the sbatch script and each point's engine command, submit nothing;
  - sbatch's refusal (bad partition, account, resources) as one line with Slurm's own message, not a traceback;
  - a new sqlite MLflow store is created before a job array is submitted (its jobs would race to create it);
  - waiting that also notices a job that ended without a result: without Slurm accounting (``sacct``),
    submitit cannot tell, and the plugin would wait forever;
  - a report per failed job: its id, state or exit code, the paths of its stdout/stderr and their last lines;
  - what was submitted, recorded in ``<sweep dir>/hsbcala-submitted.json`` (job ids, each point's overrides and
    model directory, the submitit logs) for ``python -m hsbcala.slurm.status``; with ``hydra.launcher.wait=false``
    the launcher returns right after submitting (the plugin's ``launch()`` always waits).
- ``__call__`` (in the job): registers hsbcala's config resolvers (the job never imports ``train.py``), makes a
  walltime without a requeue left an interruption (run KILLED, not FAILED), and turns hsbcala's clean exit
  (``SystemExit`` with its code) into a failed ``JobReturn``, so that submitit writes a result the launcher can
  report, while submitit's own exit after a requeue passes through untouched.
- ``checkpoint`` (in the job, on the walltime signal): notes that a requeue is under way, then the plugin's.

Imports of submitit and hsbcala are lazy: Hydra imports this module while scanning for plugins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
OWN_KEYS = {"wait"}  # hsbcala's launcher keys (config.py), not submitit's: never passed to the executor


class HsbcalaSlurmLauncher(plugin.SlurmLauncher):
    """The plugin's SlurmLauncher with a dry run, a clear sbatch refusal and failed-job reports."""

    # --- in the job ------------------------------------------------------------------------------------------
    def __call__(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> JobReturn:
        from hsbcala.config import schema
        from hsbcala.slurm import job as slurm_job
        from hsbcala.slurm.jobexit import JobExit

        schema.register()  # train.py does this at import; the job unpickles this launcher instead
        slurm_job.guard_last_timeout()  # walltime without a requeue left: the run ends KILLED, not FAILED
        try:
            return super().__call__(sweep_overrides, *args, **kwargs)
        except SystemExit as exc:
            if slurm_job.requeue_under_way() or exc.code in (None, 0, -1):
                raise  # submitit requeued the job: no result, the job starts again and resumes
            return JobReturn(
                overrides=list(sweep_overrides),
                status=JobStatus.FAILED,
                _return_value=JobExit(exc.code),
            )

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from hsbcala.slurm import job as slurm_job

        slurm_job.note_requeue()
        return super().checkpoint(*args, **kwargs)

    # --- on the login node -----------------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hsbcala.core.cli import user_paths
        from hsbcala.core.errors import clean_exit

        assert self.config is not None
        with clean_exit(user_paths(self.config)):
            if self.config.get("dry_run"):
                return self._dry_run(job_overrides, initial_job_idx)
            return self._submit_and_wait(job_overrides, initial_job_idx)

    def _executor(self, job_name: str | None = None) -> Any:
        """The submitit executor, set up exactly as the plugin's ``launch()`` does (plus the job's name)."""
        import submitit

        params = self._params(job_name)
        init_params = {"folder": params["submitit_folder"]}
        specific_init_keys = {"max_num_timeout", "python"}  # executor arguments, not sbatch parameters
        init_params.update(
            **{
                f"{self._EXECUTOR}_{x}": y
                for x, y in params.items()
                if x in specific_init_keys and not (x == "python" and y is None)
            }
        )
        init_keys = specific_init_keys | {"submitit_folder"} | OWN_KEYS
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(plugin.BaseQueueConf).keys())
        executor.update_parameters(
            **{
                x if x in baseparams else f"{self._EXECUTOR}_{x}": y
                for x, y in params.items()
                if x not in init_keys
            }
        )
        return executor

    def _params(self, job_name: str | None) -> dict:
        """The launcher's parameters, with the Slurm job named after the run(s) rather than the plugin's default,
        Hydra's job name (``train`` for every job in ``squeue``); a ``hydra.launcher.name`` set by hand is kept."""
        params = dict(self.params)
        if job_name and params.get("name") in (None, "", "train", "evaluate"):
            params["name"] = job_name
        return params

    @contextlib.contextmanager
    def _point(self, overrides: Sequence[str]) -> Iterator[tuple[DictConfig, DictConfig]]:
        """A point's sweep config (with its ``hydra`` node) and task config (without), composed once, in the
        point's Hydra context as its job will have it (the model directory's sweep name and the run name's
        sweep label need it)."""
        import copy

        from hydra.core.hydra_config import HydraConfig
        from omegaconf import read_write

        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        task_cfg = copy.deepcopy(sweep_config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(copy.deepcopy(sweep_config))  # (makes its hydra node read-only)
        try:
            yield sweep_config, task_cfg
        finally:
            HydraConfig.instance().cfg = previous

    def _submit_and_wait(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        from hsbcala.core.console import say
        from hsbcala.slurm import launch

        assert self.config is not None
        # each point's data step here, before any job waits in the queue; its model directory as the job will have it
        points = [self._preflight(overrides) for overrides in job_overrides]
        try:
            executor = self._executor(launch.job_name([p["run_name"] for p in points]))
        except (
            RuntimeError,
            ValueError,
            NameError,
        ) as exc:  # no srun here; a parameter submitit does not know
            raise launch.SubmissionError(f"hydra.launcher: {str(exc).splitlines()[0]}") from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append(
                (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            )

        if len(job_params) > 1:  # the jobs of an array start together: create a new store before they race to
            launch.prepare_store(self.config)
        jobs = launch.submit(executor, self, job_params)
        waiting = bool(self.params.get("wait", True))
        record = launch.write_record(sweep_dir, jobs, [list(o) for o in job_overrides], points)
        say(launch.submitted_message(jobs, executor, wait=waiting, sweep_dir=sweep_dir))
        if not waiting:
            print(launch.returned_message(jobs, sweep_dir, record), flush=True)
            return []  # Hydra's sweeper reads nothing more; the multirun ends with exit 0
        outcomes = launch.wait(jobs, sweep_dir=sweep_dir)

        returns: list[JobReturn] = []
        failures: list[launch.Failure] = []
        for job, overrides in zip(jobs, job_overrides):
            ret, failure = launch.outcome(job, outcomes[job.job_id], list(overrides))
            if failure is not None:
                failures.append(failure)
            elif ret is not None:
                returns.append(ret)
        if failures:
            launch.report_failures(failures, total=len(jobs))
            sys.exit(max(f.exit_code for f in failures))
        return returns

    def _preflight(self, overrides: Sequence[str]) -> dict[str, str]:
        """A point's checks, data step (hsbcala.train.plan.preflight) and tracking store
        (hsbcala.track.info.check_store) on the login node; returns the point's model directory (absolute, as the
        job resolves it), version and run name, for the record of what was submitted."""
        from hsbcala.track import info as trackinfo
        from hsbcala.train import plan as trainplan

        with self._point(overrides) as (_, task_cfg):
            trainplan.preflight(task_cfg)
            # the store the job will log to, before sbatch: a bad URI is refused here, not after the queue wait
            trackinfo.check_store(task_cfg)
            return {
                "model_dir": str(Path(str(task_cfg.model_dir)).resolve()),
                "version": str(task_cfg.version.name),
                "run_name": str(task_cfg.mlflow.run_name),
            }

    def _dry_run(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        """Print what would be submitted (sbatch script, array size) and run each point's dry run here."""
        from hsbcala.slurm import launch

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configs, names = [], []
        for overrides in job_overrides:
            with self._point(overrides) as (sweep_config, task_cfg):
                configs.append(sweep_config)
                names.append(str(task_cfg.mlflow.run_name))
        print(
            launch.sbatch_preview(self._params(launch.job_name(names)), n_jobs=len(job_overrides)), flush=True
        )
        setup_globals()
        returns = []
        for idx, (overrides, sweep_config) in enumerate(zip(job_overrides, configs), start=initial_job_idx):
            print(f"# job #{idx}: {' '.join(filter_overrides(overrides)) or '(no overrides)'}", flush=True)
            with open_dict(sweep_config.hydra.job):
                sweep_config.hydra.job.id = f"dry_run_{idx}"
                sweep_config.hydra.job.num = idx
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
        return returns
