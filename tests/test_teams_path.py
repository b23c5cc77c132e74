"""The team's path, end to end, for both Calamari versions (issue 9): a pretrained ensemble fetched from a
release archive, ``preset=full`` fine-tuning on Upper Sorbian Fraktur lines (warm start, recomputed codec,
augmentation in two stages, early stopping), a SIGTERM in the second stage and a relaunch that continues it,
evaluation on exactly the validation lines, and the release archive.

Scaled down only by overrides. The stand-in pretrained model is the tiny German Fraktur model per version that
tests/test_evaluate.py trains once per session (``tiny_models``), laid out and served like a release archive
(two ensemble members) on the loopback interface.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from hsbcala import engines
from hsbcala.engines import modeljson
from tests.conftest import ROOT
from tests.processes import start_training, wait_until

pytestmark = pytest.mark.slow

RELEASES = {"cala2": ("deep3_fraktur19", "tar.gz"), "cala1": ("fraktur_19th_century", "zip")}
NEW_LETTERS = set("ěčřł")
EARLY_STOP = {"cala2": "Early stopping. Reached number of maximum iterations", "cala1": "Early stopping now."}


def _release(model_dir: Path, name: str, fmt: str, out: Path) -> Path:
    """A release archive as Calamari-OCR publishes them: ``<name>/<i>.ckpt.json`` + weights, i = 0, 1."""
    folder = out / name
    folder.mkdir(parents=True)
    for i in (0, 1):
        for f in model_dir.glob("best.ckpt*"):
            target = folder / f.name.replace("best", str(i), 1)
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, target)
    archive = out / f"{name}.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(folder.rglob("*")):
                z.write(p, p.relative_to(out).as_posix())
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(folder, arcname=name)
    shutil.rmtree(folder)
    return archive


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/release/."""
    root = tmp_path / "release"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=1200, **kw
    )


def _checkpoints(engine, model_dir: Path) -> dict[Path, tuple[tuple[int, int], float]]:
    return {
        c: (engine.checkpoint_key(c), engine.record(c).stat().st_mtime) for c in engine.checkpoints(model_dir)
    }


@pytest.mark.parametrize("version", ["cala2", "cala1"])
def test_the_teams_path(version, tiny_models, served, tmp_path):
    engine = engines.get(version)
    name, fmt = RELEASES[version]
    root, url = served
    archive = _release(tiny_models / f"model-{version}", name, fmt, root)
    standin = modeljson.read_model(tiny_models / f"model-{version}" / "best.ckpt.json")
    assert not NEW_LETTERS & set(standin.charset)

    # 1. get the pretrained ensemble from the (loopback) release server, checked against a registry
    registry = json.loads((ROOT / "hsbcala" / "pretrained_registry.json").read_text(encoding="utf-8"))
    registry["models"][name].update(
        network=standin.network,
        model_version=None,
        members=2,
        sha256=None,
        size=archive.stat().st_size,
        url=f"{url}/{archive.name}",
    )
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps(registry), encoding="utf-8")
    got = _run(
        "-m", "hsbcala.pretrained", "get", name, "--dir", str(tmp_path / "pretrained"), "--registry", str(reg)
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert json.loads(reg.read_text())["models"][name]["sha256"], "the first get records the checksum"
    installed = tmp_path / "pretrained" / name
    pristine = {f: f.read_bytes() for f in installed.rglob("*") if f.is_file()}

    # 2. preset=full, scaled down by overrides only
    syn, model_dir = tmp_path / "syn", tmp_path / "models" / f"hsbfraktur.{version}"
    overrides = [
        f"version={version}",
        "preset=full",
        f"paths.root={tmp_path}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        "mlflow.system_metrics_interval_s=5",
        f"data.synthetic.root={syn}",
        "data.synthetic.n_train=48",
        "data.synthetic.n_val=16",
        f"data.train=[{syn}/fraktur/train/*/*.png]",
        f"data.val=[{syn}/fraktur/val/*/*.png]",
        "train.epochs=8",
        "train.iterations=null",
        "train.samples_per_epoch=16",
        "train.batch_size=8",
        "train.workers=1",
        "train.augmentations=1",
        "train.early_stopping_patience=2",
    ]
    if version == "cala2":  # Calamari 2 counts epochs for early stopping only below CER 0.9 (scenario.py)
        overrides.append("train.extra_args=[--early_stopping.upper_threshold,1.5]")
    first = start_training(overrides)
    wait_until(
        lambda: any(k[0] == 1 for k, _ in _checkpoints(engine, model_dir).values()),
        first,
        timeout=900,
        what="a second-stage checkpoint",
    )
    time.sleep(1.0)
    before = _checkpoints(engine, model_dir)
    resumed_key = max(k for k, _ in before.values())
    first.send_signal(signal.SIGTERM)
    err1 = first.communicate(timeout=180)[1]
    assert first.returncode == 130, err1[-3000:]
    state = json.loads((model_dir / "hsbcala-state.json").read_text())
    run_id = state["run_id"]

    report = json.loads((model_dir / "codec-report.json").read_text(encoding="utf-8"))
    assert NEW_LETTERS <= {e["char"] for e in report["added"]}, report["added"]
    assert (model_dir / "warmstart" / "0.ckpt.json").is_file()

    t_relaunch = time.time()
    second = _run(str(ROOT / "train.py"), *overrides)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr
    after = _checkpoints(engine, model_dir)
    new = sorted((mtime, key) for c, (key, mtime) in after.items() if mtime > t_relaunch)
    if new:  # the first checkpoint after the relaunch continues the second stage (none: it stopped at once)
        stage, position = new[0][1]
        assert stage == 1 and (stage, position) > resumed_key, (new[0], resumed_key)
    state = json.loads((model_dir / "hsbcala-state.json").read_text())
    assert state["run_id"] == run_id and state["status"] == "finished"
    log = (model_dir / "engine.log").read_text(encoding="utf-8", errors="replace")

    trained = modeljson.read_model(model_dir / "best.ckpt.json")
    assert NEW_LETTERS <= set(trained.charset) and trained.network == standin.network
    # the engine started from the copy inside the model directory; the installed pretrained model is untouched
    assert str(model_dir / "warmstart" / "0.ckpt") in log  # (Calamari 1 takes it without .json)
    assert {f: f.read_bytes() for f in installed.rglob("*") if f.is_file()} == pristine
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert max(m.value for m in client.get_metric_history(run_id, "stage")) == 2.0  # both stages ran (from 1)

    # 3. evaluation on exactly the run's validation lines, and the release
    ev = _run(
        str(ROOT / "evaluate.py"),
        f"version={version}",
        "preset=full",
        f"paths.root={tmp_path}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        "eval.export=true",
        f"eval.export_dir={tmp_path / 'releases'}",
        "eval.batch_size=8",
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "eval-result.json").read_text(encoding="utf-8"))
    val = {
        x["image"]
        for x in json.loads((model_dir / "manifest.json").read_text())["lines"]
        if x["split"] == "val"
    }
    lines = (tmp_path / "eval" / "val" / "lines.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert {row.split("\t")[0] for row in lines} == val
    # The engine's validation CER of the exported model and evaluate.py's CER of it on the same lines. On a
    # useful model they agree within about a point (0.2865 vs 0.2961 on the demo); on this 2-epoch stand-in
    # (CER near 0.9) Calamari 2's in-training validation read 0.841 where calamari-predict + calamari-eval's
    # rules give 0.913 (measured; evaluate.py's CER equals calamari-eval's, tests/test_evaluate.py). The bound
    # still catches a wrong model or wrong lines (an untrained or other model: CER >= 1, or far off).
    best = client.get_run(run_id).data.metrics["best_val_cer"]
    assert abs(result["sets"][0]["overall"]["cer"] - best) <= 0.1, (
        result["sets"][0]["overall"]["cer"],
        best,
    )
    # early stopping: Calamari 2 ends a stage after `patience` epochs without a better model. Calamari 1 counts
    # down the same way ("remaining nbest = 0") but stops only while the current check's accuracy is above 0
    # (CER < 100 %; earlystopping.py:204 in 1.0.7), which this 2-epoch stand-in never reaches.
    if version == "cala2":
        assert EARLY_STOP[version] in log, "early stopping ended no stage"
    else:
        assert "remaining nbest = 0)" in log, "the patience was not counted down"
    with tarfile.open(result["export"]) as t:
        names = t.getnames()
    assert any(n.endswith("/best.ckpt.json") for n in names) and any(
        n.endswith("hsbcala-release.json") for n in names
    )
