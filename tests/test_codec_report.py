"""The codec report (hsbcala.data.codec via hsbcala.data.step): the GT's characters against the warm-start model's
codec. Upper Sorbian text (../shared/data/hsb-text) against German Fraktur models: ě č ř ł … are additions.

Fast: models written as JSON like the real files of both Calamari versions, with the codec of real German
lines. Slow: a tiny model really trained on German Fraktur lines through train.py, then the data step alone
(data_check_only=true) with Sorbian GT; and what that training logged (manifest, data hash, environment)."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from hsbcala.data import codec
from tests.conftest import ROOT
from tests.gt_helpers import HSB_TEXT, books, copy_book, gt_of, need, prepare, text

SORBIAN = set("ěčřł")


def sorbian_chunks(n: int, width: int = 45) -> list[str]:
    """n pieces of real Upper Sorbian sentences (about a line each), covering ě č ř ł."""
    words = " ".join(need(HSB_TEXT).read_text(encoding="utf-8").split()).split(" ")
    chunks, cur = [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width and cur:
            chunks.append(cur)
            cur = ""
        cur = f"{cur} {w}".strip()
    picked, seen = [], set()
    for c in chunks:  # first the chunks that bring a missing letter, then fill up
        if (SORBIAN - seen) & set(c):
            picked.append(c)
            seen |= set(c)
    picked += [c for c in chunks if c not in picked][: max(0, n - len(picked))]
    assert SORBIAN <= seen
    return [unicodedata.normalize("NFC", c) for c in picked[: max(n, len(picked))]]


@pytest.fixture
def sorbian_lines(tmp_path) -> Path:
    """Real Fraktur line images with Upper Sorbian GT beside them: tmp/train (16 lines), tmp/val (4 lines)."""
    b = books()
    images = copy_book(b[5], tmp_path / "train", 16) + copy_book(b[6], tmp_path / "val", 4)
    for image, chunk in zip(images, sorbian_chunks(len(images)), strict=False):
        gt_of(image).write_text(chunk + "\n", encoding="utf-8")
    return tmp_path


def german_charset() -> list[str]:
    chars: set[str] = set()
    for book in books()[:3]:
        for png in sorted(book.glob("*.png")):
            if gt_of(png).is_file():
                chars |= set(unicodedata.normalize("NFC", text(png)))
    return ["", *sorted(chars)]


# ------------------------------------------------------------------------------------------------- fast


def test_report_policies():
    counts = codec.count_chars(["aab", "bě"])  # GT: a a b b ě
    r = codec.report(counts, ("a", "b", "ſ", "ß"), model="m", model_version=2, policy="recompute")
    assert [(e["char"], e["count"]) for e in r["added"]] == [("ě", 1)]
    assert [e["char"] for e in r["unused"]] == [e["char"] for e in r["dropped"]] == ["ſ", "ß"]
    assert r["codec_size"] == 3 and "drops 2" in r["effect"]
    k = codec.report(counts, ("a", "b", "ſ", "ß"), model="m", model_version=1, policy="keep_loaded")
    assert k["dropped"] == [] and k["codec_size"] == 5
    assert (
        r["added"][0]["name"] == "LATIN SMALL LETTER E WITH CARON" and r["added"][0]["codepoint"] == "U+011B"
    )
    table = "\n".join(codec.short_table(r))
    assert "ě 1" in table and "drop    2" in table


@pytest.mark.parametrize("version", ["cala2", "cala1"])
def test_sorbian_gt_against_a_german_model_of_either_version(sorbian_lines, version):
    from tests.test_models import V1_DEFAULT_LAYERS, conv, lstm, pool, v1_checkpoint, v2_trainer_params

    charset = german_charset()
    assert not SORBIAN & set(charset)
    model = sorbian_lines / "german" / "best.ckpt.json"
    model.parent.mkdir()
    d = (
        v2_trainer_params([conv(8), pool(), lstm(16)], charset)
        if version == "cala2"
        else v1_checkpoint(V1_DEFAULT_LAYERS, charset)
    )
    model.write_text(json.dumps(d), encoding="utf-8")
    dp = prepare(sorbian_lines, f"version={version}", f"warmstart.model={model}")
    r = dp.codec_report
    assert r["model_version"] == int(version[-1]) and r["model_codec_size"] == len(charset) - 1
    added = {e["char"]: e["count"] for e in r["added"]}
    assert SORBIAN <= set(added) and all(added[c] > 0 for c in SORBIAN)
    gt_counts = codec.count_chars(line.text for line in dp.outcome.kept)
    assert added == {c: n for c, n in gt_counts.items() if c not in charset}
    assert "ſ" in {
        e["char"] for e in r["dropped"]
    }  # German long s: never in Sorbian text, dropped by recompute
    # nothing written yet; the runner writes it into the model directory
    dp.write(sorbian_lines / "model")
    assert json.loads((sorbian_lines / "model" / "codec-report.json").read_text()) == r
    assert "LATIN SMALL LETTER R WITH CARON" in (sorbian_lines / "model" / "codec-report.txt").read_text()


def test_no_report_without_warm_start_or_when_resuming(sorbian_lines):
    assert prepare(sorbian_lines).codec_report is None


# ------------------------------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def german_model(tmp_path_factory):
    """A tiny Calamari 2 model trained on German Fraktur lines through train.py: (tmp, model dir, proc)."""
    from tests.test_train_integration import launch, tiny

    b = books()
    tmp = tmp_path_factory.mktemp("german")
    # no data.val: the three books are split by document (seed 50), so the split reaches the real engine too
    overrides = tiny(
        tmp,
        b[:3],
        [],
        "cala2",
        **{
            "train.epochs": "1",
            "data.cache_dir": str(tmp / "cache"),
            "data.val": "null",
            "data.split.val_fraction": "0.3",
        },
    )
    proc = launch(overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, tmp / "model-cala2", proc


@pytest.mark.slow
def test_real_german_model_codec_report(german_model, sorbian_lines):
    _, model_dir, _ = german_model
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            f"paths.root={sorbian_lines}",
            f"model_dir={sorbian_lines / 'sorbian'}",
            f"data.cache_dir={sorbian_lines / 'cache'}",
            f"data.train=[{sorbian_lines}/train/*.png]",
            f"data.val=[{sorbian_lines}/val/*.png]",
            f"warmstart.model={model_dir / 'best.ckpt.json'}",
            "data_check_only=true",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=sorbian_lines,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((sorbian_lines / "sorbian" / "codec-report.json").read_text())
    added = {e["char"] for e in r["added"]}
    assert SORBIAN <= added, sorted(added)
    assert r["model_version"] == 2 and r["policy"] == "recompute"
    table = [line for line in proc.stderr.splitlines() if line.startswith("hsbcala:   new")]
    assert table and f"{len(added)}  " in table[0]  # printed before anything else happens
    full = (sorbian_lines / "sorbian" / "codec-report.txt").read_text()
    assert all(f"\n  {c} " in full for c in SORBIAN)


@pytest.mark.slow
def test_training_logs_manifest_data_hash_and_environment(german_model):
    import mlflow

    tmp, model_dir, proc = german_model
    state = json.loads((model_dir / "hsbcala-state.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns.db'}")
    run = client.get_run(state["run_id"])
    m = json.loads((model_dir / "manifest.json").read_text())
    assert m["status"] == "passed" and m["split"]["mode"] == "split"
    assert (m["totals"]["train"]["documents"], m["totals"]["val"]["documents"]) == (2, 1)
    saved = json.loads((model_dir / "split.json").read_text())
    assert {e["image"] for e in saved["val"]} == {r["image"] for r in m["lines"] if r["split"] == "val"}
    assert run.data.tags["data.content_sha256"] == m["content_sha256"]
    assert run.data.tags["data.n_train"] == str(m["totals"]["train"]["lines"])
    data_arts = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert data_arts == {"data/manifest.json", "data/split.json"}
    env_arts = {a.path for a in client.list_artifacts(run.info.run_id, "environment")}
    assert {"environment/cala2-freeze.txt", "environment/hsbcala-git.txt"} <= env_arts
    freeze = Path(client.download_artifacts(run.info.run_id, "environment/cala2-freeze.txt", str(tmp / "dl")))
    assert "calamari-ocr==2.3.1" in freeze.read_text()
    assert "hsbcala: data: " in proc.stderr  # the data summary is printed before training
