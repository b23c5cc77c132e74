"""One model directory per sweep point: named after what the point varies, never a path verbatim.

A multirun (``-m``) point's model directory is ``models/<model>.<version>@<name>``, beside the non-sweep
``models/<model>.<version>`` (not inside it, where it looked like part of that model), where ``<name>`` lists the
keys the sweep varies (those given with sweep syntax on the command line: ``a=1,2``, ``range(…)``,
``choice(…)``) with this point's values: ``train.batch_size=32``, or for a value that is not a short plain
token (a path, a list of globs) a readable slug and a hash of the whole value: ``data.train=hsb-fraktur-1a2b3c4d``.
Keys that do not change the model (where things are, how they are tracked or checked, evaluation settings;
:data:`NOT_A_MODEL`) never count. A run without sweep keys (a single run, or a Slurm submission of one point)
keeps the stable ``models/<model>.<version>``.

The sweep's own command line is read back from ``<sweep dir>/multirun.yaml`` (Hydra saves it before the
first job starts; on a cluster the sweep dir is on the shared file system). :class:`DistinctModelDirs`
(a Hydra callback) computes every point's name before anything is launched and refuses a sweep whose points
would share a directory.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

# Keys (or key prefixes, ending in ".") that say where things are, how a run is tracked, checked, profiled or
# evaluated: sweeping them trains the same model, so they never name a model directory.
NOT_A_MODEL = (
    "script",
    "version",
    "cluster",
    "profiler",
    "dry_run",
    "data_check_only",
    "model_dir",
    "paths.",
    "mlflow.",
    "cluster.",
    "profiler.",
    "hydra.",
    "eval.",
    "eval",
    "data.cache_dir",
    "data.checks.",
    "data.archive_max_bytes",
    "data.archive_max_ratio",
    "data.triage",  # a report beside data_check_only (data.exclude, which changes the data, does count)
    "data.triage_model",
    "warmstart.pretrained_dir",
)
# config sections: a key ending in one of these names keeps its section too (``data.train``)
_SECTIONS = {"train", "data", "warmstart", "mlflow", "eval", "version", "script", "cluster", "paths", "split"}
_PLAIN = re.compile(r"^[A-Za-z0-9._+-]{1,40}$")


def _counts(key: str) -> bool:
    return not any(key == k or (k.endswith(".") and key.startswith(k)) for k in NOT_A_MODEL)


def value_name(value: str) -> str:
    """A short, readable, file-system-safe name for an override value (a hash keeps it distinct)."""
    value = value.strip()
    if _PLAIN.match(value):
        return value
    # the last path component without glob characters: the book or data set a glob list names
    parts = [p for p in re.split(r"[/\\\[\],'\" ]+", value) if p and not re.search(r"[*?{}]", p)]
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip(".-_") for p in parts]
    parts = [p for p in parts if p]
    slug = (parts[-1] if parts else "value")[:24].strip(".-_") or "value"
    return f"{slug}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def swept_keys(task_overrides: Sequence[str]) -> list[str]:
    """The keys given with sweep syntax in a multirun's command line that can change the model."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return sorted({o.key_or_group for o in parsed if o.is_sweep_override() and _counts(o.key_or_group)})


def _point_values(job_overrides: Sequence[str], keys: Sequence[str]) -> dict[str, str]:
    """A point's values of the swept ``keys``, each as :func:`value_name` gives it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = {}
    for o in OverridesParser.create().parse_overrides(list(job_overrides)):
        if o.key_or_group in keys:
            text = o.input_line.split("=", 1)[1] if "=" in o.input_line else ""
            values[o.key_or_group] = value_name(text)
    return values


def point_name(job_overrides: Sequence[str], keys: Sequence[str]) -> str:
    """``key=value,…`` for a point's values of the swept ``keys`` ('' when there are none)."""
    values = _point_values(job_overrides, keys)
    return ",".join(f"{k}={values[k]}" for k in keys if k in values)


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each key's last component (``train.batch_size`` → ``batch_size``), or more of it where two swept keys
    would otherwise look the same (``data.train``/``train.x`` stay apart)."""
    out = {}
    for k in keys:
        parts = k.split(".")
        n = 2 if len(parts) > 1 and parts[-1] in _SECTIONS else 1  # data.train, not "train=…"
        while n < len(parts) and any(
            o != k and o.split(".")[-n:] == parts[-n:] for o in keys if len(o.split(".")) >= n
        ):
            n += 1
        out[k] = ".".join(parts[-n:])
    return out


def point_label(job_overrides: Sequence[str], keys: Sequence[str]) -> str:
    """A sweep point's short name for MLflow's run table and chart legends: ``batch_size=32,seed=2`` (the
    directory's :func:`point_name` without the keys' sections), so the UI, which cuts long run names, does not
    show two points alike."""
    short, values = short_keys(keys), _point_values(job_overrides, keys)
    return ",".join(f"{short[k]}={values[k]}" for k in keys if k in values)


def _sweep_command_line(sweep_dir: Path) -> list[str] | None:
    from omegaconf import OmegaConf

    try:
        return list(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)
    except (OSError, AttributeError, ValueError):
        return None


def _point() -> tuple[list[str], list[str]] | None:
    """This multirun job's overrides and the sweep's model keys (None outside a multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    job = list(hc.overrides.task)
    command_line = _sweep_command_line(Path(str(hc.sweep.dir)))
    if command_line is None:  # no multirun.yaml (a job composed outside its sweep): its own model keys decide
        keys = sorted(
            {o.split("=", 1)[0].lstrip("+~") for o in job if _counts(o.split("=", 1)[0].lstrip("+~"))}
        )
    else:
        keys = swept_keys(command_line)
    return job, keys


def suffix(sep: str) -> str:
    """The resolver ``${sweep_suffix:SEP}``: ``SEP<point name>`` in a multirun whose sweep varies a model key."""
    point = _point()
    name = point_name(*point) if point else ""
    return sep + name if name else ""


def label(sep: str) -> str:
    """The resolver ``${sweep_label:SEP}``: ``SEP<point label>`` (:func:`point_label`) in such a multirun."""
    point = _point()
    text = point_label(*point) if point else ""
    return sep + text if text else ""


class DistinctModelDirs(Callback):
    """Hydra callback: before a multirun launches anything, refuse points that would share a model directory
    (they differ only in keys that do not name a model, e.g. ``mlflow.run_name=a,b``)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        command_line = list(config.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(command_line)
        if not any(o.is_sweep_override() for o in parsed):
            return
        points = [p for batch in BasicSweeper.split_arguments(parsed, None) for p in batch]
        keys = swept_keys(command_line)
        seen: dict[tuple, list[str]] = {}
        for p in points:
            named = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(p)}
            where = (named.get("script"), named.get("version"), named.get("model_dir"), point_name(p, keys))
            seen.setdefault(where, []).append(" ".join(p))
        shared = [v for v in seen.values() if len(v) > 1]
        if shared:
            print(
                f"hsbcala: error: {len(shared[0])} sweep points would train in one model directory "
                f"({shared[0][0]!r} and {shared[0][1]!r}): they differ only in keys that do not name a model; "
                f"add a model key to the sweep or set model_dir per point",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(2)
