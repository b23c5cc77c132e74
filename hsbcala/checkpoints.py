"""The model directory: which Calamari version wrote it, its newest checkpoint, its best model, hsbcala's state.

Layouts (as the engines write them):

- Calamari 2: ``checkpoint/checkpoint_NNNN/trainer_params.json`` (+ ``variables/``), one per epoch; with
  augmentation the training runs in two stages (``aug_data/`` then ``real_data/`` logs) and the second stage
  numbers its epochs from 1 again, overwriting ``checkpoint_0001`` …, so "newest" is decided by the stage and
  epoch recorded inside ``trainer_params.json``, not by the directory number. Best model: ``best.ckpt.json`` +
  ``best.ckpt/`` (a SavedModel).
- Calamari 1: ``model_NNNNNNNN.ckpt.json`` + ``.h5`` (NNNNNNNN = iteration; again two stages with the
  iteration restarting, so the JSON's ``currentStage``/``iter`` decide). Best model: ``best.ckpt.json`` + ``.h5``;
  ``model_last.ckpt`` is written when training ends.

hsbcala keeps ``hsbcala-state.json`` beside them: the version, the MLflow run id (so a resumed training
continues the same run) and whether training finished (a finished model is not retrained).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hsbcala.errors import ConfigError

STATE_FILE = "hsbcala-state.json"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def detect_version(model_dir: Path) -> str | None:
    """Which Calamari version wrote ``model_dir`` (from hsbcala's state, else from the engine's files)."""
    state = _read_json(model_dir / STATE_FILE)
    if state.get("version") in ("cala1", "cala2"):
        return state["version"]
    if (model_dir / "checkpoint").is_dir() or (model_dir / "best.ckpt").is_dir():
        return "cala2"
    if any(model_dir.glob("model_*.ckpt.h5")) or (model_dir / "best.ckpt.h5").is_file():
        return "cala1"
    return None


def _cala2_key(params: Path) -> tuple[int, int, float]:
    d = _read_json(params)
    return int(d.get("current_stage", 0) or 0), int(d.get("current_epoch", 0) or 0), params.stat().st_mtime


def _cala1_key(ckpt_json: Path) -> tuple[int, int, float]:
    d = _read_json(ckpt_json)
    return int(d.get("currentStage", 0) or 0), int(d.get("iter", 0) or 0), ckpt_json.stat().st_mtime


def latest_checkpoint(model_dir: Path, version: str) -> Path | None:
    """The checkpoint to resume from, in the form the version's resume command takes.

    Calamari 2: ``…/checkpoint_NNNN/trainer_params.json``; Calamari 1: ``…/model_NNNNNNNN.ckpt`` (no suffix).
    A checkpoint whose files are incomplete (interrupted while writing) is passed over.
    """
    if version == "cala2":
        candidates = [
            p for p in model_dir.glob("checkpoint/checkpoint_*/trainer_params.json")
            if (p.parent / "variables").is_dir() and _read_json(p)
        ]
        return max(candidates, key=_cala2_key, default=None)
    candidates = [
        p for p in model_dir.glob("model_*.ckpt.json")
        if p.name != "model_last.ckpt.json" and p.with_suffix(".h5").is_file() and _read_json(p)
    ]
    best = max(candidates, key=_cala1_key, default=None)
    return best.with_suffix("") if best else None


def best_model(model_dir: Path, version: str) -> list[Path]:
    """The files of the best model (empty if there is none yet)."""
    spec = model_dir / "best.ckpt.json"
    weights = model_dir / ("best.ckpt" if version == "cala2" else "best.ckpt.h5")
    return [spec, weights] if spec.is_file() and weights.exists() else []


@dataclass
class State:
    version: str
    run_id: str | None = None
    tracking_uri: str | None = None
    status: str = "training"  # training | finished
    best_val_cer: float | None = None
    history: list[dict] = field(default_factory=list)  # one entry per launch: start time, job id, resumed from


def load_state(model_dir: Path) -> State | None:
    d = _read_json(model_dir / STATE_FILE)
    if not d:
        return None
    known = set(State.__dataclass_fields__)
    return State(**{k: v for k, v in d.items() if k in known})


def save_state(model_dir: Path, state: State) -> None:
    """Write the state atomically (a crash never leaves a half-written state file)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f, indent=2)
    os.replace(tmp, model_dir / STATE_FILE)


def check_version(model_dir: Path, version: str) -> None:
    """Refuse a model directory written by the other Calamari version."""
    found = detect_version(model_dir) if model_dir.is_dir() else None
    if found is not None and found != version:
        raise ConfigError(
            f"model_dir {model_dir} holds a {found} model, but version={version}; "
            f"choose version={found} or another model_dir"
        )
