"""The release archive of an evaluated model (``eval.export=true``), and what lets others install and trust it.

``<eval.export_dir>/<model name>.<version>-<YYYYmmdd-HHMMSS>.tar.gz`` holds, under ``<name>/`` (the folder
ocrd_calamari's ``checkpoint_dir`` names: one ``*.ckpt.json`` + its weights):

- the model files as the engine wrote them;
- ``README.md``: the model card, HTRMoPo v1 (:mod:`hsbcala.evaluate.modelcard`), also logged to MLflow;
- ``hsbcala-release.json`` (script, version, network, training data and run, the CER table, provenance) and
  ``CER.md``;
- ``provenance/``: the engine environment's ``pip freeze``, ``module list`` (on a module system) and
  ``hsbcala-git.txt`` (commit, dirty or not: :func:`hsbcala.track.provenance.git_state`), as the training run logs
  them (:func:`hsbcala.track.provenance.capture`).

Beside it ``<archive name>.ocrd-resources.yml`` (:mod:`hsbcala.evaluate.ocrdresource`), for ``ocrd resmgr``. The
archive is written as ``.part`` and renamed, so a half-written archive never carries the final name.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from hsbcala import modeldir
from hsbcala.config import schema
from hsbcala.engines import envs
from hsbcala.evaluate import report

if TYPE_CHECKING:
    from hsbcala.evaluate.predict import Plan


def export_release(
    cfg: Any, p: Plan, result: dict, training_params: dict[str, str], tracker: Any = None
) -> Path:
    """``<eval.export_dir>/<model name>.<version>-<YYYYmmdd-HHMMSS>.tar.gz`` (see the module docstring) and its
    OCR-D resource entry beside it; the model card also goes to the evaluation's MLflow run (``tracker``)."""
    from hsbcala import engines
    from hsbcala.core.console import say
    from hsbcala.engines import modeljson
    from hsbcala.evaluate import modelcard, ocrdresource
    from hsbcala.track import info as trackinfo
    from hsbcala.track import provenance

    info = modeljson.read_model(p.checkpoint)
    files = [p.checkpoint, *engines.weights_of(p.checkpoint)]
    name = f"{cfg.script.model_name}.{p.version}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    export_dir = Path(cfg.eval.export_dir).expanduser().resolve()
    export_dir.mkdir(parents=True, exist_ok=True)
    archive = export_dir / f"{name}-{stamp}.tar.gz"

    def _param(key: str) -> Any:
        return trackinfo.param_value(training_params.get(key))

    if training_params:
        training = {
            "train": _param("data.train"),
            "val": _param("data.val"),
            "source": "the MLflow training run",
            "preset": _param("preset"),
            "warmstart": _param("warmstart.model"),
            "network": _param("train.network"),
        }
    else:
        training = {
            "train": list(cfg.data.train) if not OmegaConf.is_missing(cfg.data, "train") else None,
            "val": list(cfg.data.val) if not OmegaConf.is_missing(cfg.data, "val") else None,
            "source": "the evaluation's config (no training run found)",
        }
    state = modeldir.load_state(p.model_dir) if p.model_dir else None
    project = envs.project_root()
    records = provenance.capture(p.env, project)  # <env>-freeze.txt, modules.txt, hsbcala-git.txt
    git = provenance.git_state(project)
    meta = {
        "name": name,
        "script": cfg.script.name,
        "version": p.version,
        "calamari": cfg.version.package,
        "model_files": [f.name for f in files],
        "network": info.network,
        "charset_size": len(info.charset),
        "training_data": training,
        "best_val_cer": state.best_val_cer if state else None,
        "mlflow": result.get("mlflow"),
        "evaluation": {
            "normalization": result["normalization_description"],
            "groups": p.groups,
            "sets": [
                {
                    k: s[k]
                    for k in ("name", "patterns", "overall", "groups", "wer", "classes", "sorbian_letters")
                    if k in s
                }
                for s in result["sets"]
            ],
            "intervals": result.get("intervals"),
        },
        "cer_table": report.markdown([result], footer=False),
        "hsbcala_commit": git.label(),
        "provenance": {
            "hsbcala_commit": git.commit,
            "dirty": git.dirty,
            "files": sorted(f"provenance/{k}" for k in records),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "usage": f"calamari-predict --checkpoint {name}/{p.checkpoint.name} … (calamari-ocr "
        f"{cfg.version.package.split('==')[-1]})",
    }
    facts = _facts(cfg, p, result, training_params, info, files, name, records, git)
    release_cfg = cfg.get("release") or OmegaConf.structured(schema.ReleaseConf)
    card = modelcard.render(release_cfg, facts)
    with tempfile.TemporaryDirectory() as tmp:
        card_path = Path(tmp) / "README.md"
        card_path.write_text(card, encoding="utf-8")
        for fname, text in records.items():
            (Path(tmp) / fname).write_text(text, encoding="utf-8")
        meta_path = Path(tmp) / "hsbcala-release.json"
        meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        table_path = Path(tmp) / "CER.md"
        table_path.write_text(report.markdown([result]), encoding="utf-8")
        part = archive.with_name(archive.name + ".part")
        with tarfile.open(part, "w:gz") as tar:
            for f in files:
                tar.add(f, arcname=f"{name}/{f.name}")
            tar.add(meta_path, arcname=f"{name}/hsbcala-release.json")
            tar.add(table_path, arcname=f"{name}/CER.md")
            tar.add(card_path, arcname=f"{name}/README.md")
            for fname in records:
                tar.add(Path(tmp) / fname, arcname=f"{name}/provenance/{fname}")
        os.replace(part, archive)
    entry = ocrdresource.entry(
        name, archive, release_cfg.url, info.version, release_cfg.summary or facts["default_summary"]
    )
    result["ocrd_resources"] = str(ocrdresource.write(entry, archive))
    gaps = modelcard.missing(release_cfg)
    if gaps:
        say(f"the model card leaves missing (set them before publishing): {', '.join(gaps)}")
    if tracker is not None:
        tracker.log_text(card, "release/README.md")
    return archive


def _facts(
    cfg: Any,
    p: Plan,
    result: dict,
    training_params: dict[str, str],
    info: Any,
    files: list[Path],
    name: str,
    records: dict[str, str],
    git: Any,
) -> dict:
    """What the model card states, each from where it is known (never from a default of this config)."""
    import hashlib
    import shlex

    from hsbcala import engines
    from hsbcala.data.manifest import MANIFEST_FILE
    from hsbcala.track import info as trackinfo

    def param(key: str) -> Any:
        return trackinfo.param_value(training_params.get(key))

    calamari = str(cfg.version.package).split("==")[-1]
    training: dict[str, Any] = {}
    manifest_path = p.model_dir / MANIFEST_FILE if p.model_dir else None
    if manifest_path is not None and manifest_path.is_file():
        raw = manifest_path.read_bytes()
        m = json.loads(raw)
        training = {
            "manifest": m.get("totals", {}),
            "content_sha256": m.get("content_sha256"),
            "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        }
    base = param("warmstart.model")
    if not base and p.model_dir and (p.model_dir / "codec-report.json").is_file():
        base = json.loads((p.model_dir / "codec-report.json").read_text(encoding="utf-8")).get("model")
    settings = {
        key: param(key)
        for key in (
            "preset",
            "train.network",
            "train.epochs",
            "train.batch_size",
            "train.learning_rate",
            "train.augmentations",
            "train.early_stopping_patience",
            "train.codec",
            "train.seed",
            "data.split.val_fraction",
        )
        if key in training_params
    }
    if not settings:
        settings = {"settings": "missing (no MLflow training run found for this model)"}
    engine = engines.get(p.version)
    predict = engine.predict_argv(
        "calamari-predict", Path(name) / p.checkpoint.name, "lines/*.png", Path("predictions"), 16
    )
    mlflow = result.get("mlflow") or {}
    return {
        "name": name,
        "version": p.version,
        "calamari_version": calamari,
        "checkpoint": p.checkpoint.name,
        "script": cfg.script.name,
        "iso15924": cfg.script.iso15924,
        "default_summary": f"Upper Sorbian {cfg.script.name} text line recognition, Calamari {calamari}",
        "network": info.network,
        "charset_size": len(info.charset),
        "model_files": [f.name for f in files],
        "training": training,
        "settings": settings,
        "base_model": base or None,
        "base_model_url": _registry_url(base) if base else None,
        "sets": result["sets"],
        "normalization": result["normalization_description"],
        "level": (result.get("intervals") or {}).get("level", 0.95),
        "predict_command": shlex.join(predict),
        "provenance": {
            "commit": git.commit,
            "dirty": git.dirty,
            "mlflow": ", ".join(
                f"{k} {v}"
                for k, v in (("run", mlflow.get("run_id")), ("training run", mlflow.get("training_run_id")))
                if v
            )
            or None,
            "freeze_file": next((f"provenance/{k}" for k in records if k.endswith("-freeze.txt")), None),
            "modules_file": "provenance/modules.txt" if "modules.txt" in records else None,
        },
    }


def _registry_url(model: str) -> str | None:
    """The download URL of a warm-start model that is a pretrained registry entry (``<pretrained_dir>/<entry>/
    <member>.ckpt.json``), else None: a local model has no public source to name."""
    from hsbcala.core.errors import HsbcalaError
    from hsbcala.pretrained import registry

    try:
        entries = registry.load_registry(registry.registry_path())
    except HsbcalaError:
        return None
    e = entries.get(Path(model).parent.name)
    return e.url if e is not None else None
