"""The release archive of an evaluated model (``eval.export=true``).

``<eval.export_dir>/<model name>.<version>-<YYYYmmdd-HHMMSS>.tar.gz`` holds the model files under
``<name>/``, ``hsbcala-release.json`` (script, version, network, training data and run, the CER table, the git
commit of hsbcala) and ``CER.md``. Written as ``.part`` and renamed, so a half-written archive never carries
the final name.
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

from hsbcala import modeldir, report
from hsbcala.engines import envs

if TYPE_CHECKING:
    from hsbcala.evaluate import Plan


def export_release(cfg: Any, p: Plan, result: dict, training_params: dict[str, str]) -> Path:
    """``<eval.export_dir>/<model name>.<version>-<YYYYmmdd-HHMMSS>.tar.gz``: the model files and
    ``hsbcala-release.json`` (script, version, training data, CER table, hsbcala commit) plus ``CER.md``."""
    from hsbcala import engines, trackinfo
    from hsbcala.engines import modeljson

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
        "hsbcala_commit": trackinfo.git_commit(envs.project_root()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "usage": f"calamari-predict --checkpoint {name}/{p.checkpoint.name} … (calamari-ocr "
        f"{cfg.version.package.split('==')[-1]})",
    }
    with tempfile.TemporaryDirectory() as tmp:
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
        os.replace(part, archive)
    return archive
