"""After ``python evaluate.py -m``: the comparison table of every job of the sweep (a Hydra callback).

Each job of the multirun wrote its ``eval-result.json`` (:mod:`hsbcala.evaluate`); :class:`ComparisonTable`
collects them in job order into ``cer-table.md/.csv/.png`` in the sweep dir, prints the table, logs it to
MLflow as a comparison run (:func:`hsbcala.tracking.log_comparison`), and exits 2 when a model is missing. A job
that died without a result is a row marked missing, never a number.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hsbcala import report, trackinfo, tracking
from hsbcala.console import say
from hsbcala.scoring import RESULT_FILE


def _job_label(job_dir: Path) -> str:
    with contextlib.suppress(Exception):
        overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
        return " ".join(str(o) for o in overrides)
    return f"job {job_dir.name}"


def collect(sweep_dir: Path) -> list[dict]:
    """Every job's result in job order; a job dir without one (the job died) becomes a missing row."""
    jobs = sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    )
    results = []
    for d in jobs:
        f = d / RESULT_FILE
        if f.is_file():
            results.append(json.loads(f.read_text(encoding="utf-8")))
        elif (d / ".hydra").is_dir():
            results.append(
                {
                    "model": _job_label(d),
                    "sets": [],
                    "groups": {},
                    "error": f"the job ended without a result (see {d})",
                }
            )
    return results


class ComparisonTable(Callback):
    """Hydra callback: after a multirun of evaluate.py, the comparison table of all its jobs in the sweep dir
    (``cer-table.md``, ``.csv``, ``.png``), printed and logged to MLflow; exit 2 when a model is missing."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.get("dry_run", False)).lower() == "true":
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if not sweep_dir.is_dir():
            return
        results = collect(sweep_dir)
        if not results:
            return
        paths = report.write(results, sweep_dir, stem="cer-table")
        print("\n" + report.markdown(results), flush=True)
        say(f"comparison table: {paths['md']} (and {paths['csv'].name}, {paths['png'].name})")
        uri = next(((r.get("mlflow") or {}).get("tracking_uri") for r in results if r.get("mlflow")), None)
        if uri is None:
            with contextlib.suppress(Exception):
                uri = trackinfo.tracking_uri(config)
        if uri:
            try:
                experiment = config.eval.comparison_experiment if config.get("eval") else "hsbcala-evaluation"
                run_id = tracking.log_comparison(results, paths, sweep_dir, experiment, uri)
                say(f"comparison logged to MLflow experiment '{experiment}', run {run_id}")
            except Exception as exc:  # noqa: BLE001 - the table on disk is the result; MLflow is a copy
                say(
                    f"warning: could not log the comparison table to MLflow ({uri}): {str(exc).splitlines()[0]}"
                )
        failed = report.any_failed(results)
        if failed:
            say(
                f"error: {len(failed)} of {len(results)} evaluations failed (marked missing in the table): "
                + "; ".join(f"{r['model']}: {r['error']}" for r in failed)
            )
            sys.exit(2)
