"""Releases others can install and trust (issue 24): the model card (HTRMoPo v1), the OCR-D resource entry and
a layout calamari-predict loads from the unpacked folder, the registry's champion, one idea of "dirty".

The slow tests reuse tests/test_evaluate.py's session multirun (one tiny real model per version, evaluated and
exported with ``eval.export=true``); the registry test builds its versions' per-line results from that
multirun's real ``lines.tsv`` files, in a real MLflow sqlite store.
"""

from __future__ import annotations

import glob
import json
import re
import subprocess
import tarfile
import types
from pathlib import Path

import pytest
import yaml

from hsbcala import engines
from hsbcala.engines import envs
from hsbcala.evaluate import cer, champion, modelcard, scoring
from hsbcala.track import info as trackinfo
from hsbcala.track import provenance
from tests.conftest import ROOT
from tests.test_evaluate import VERSIONS, _ok, compose_eval
from tests.test_pretrained import cli as pretrained_cli

# ---- Facts of HTRMoPo's v1 metadata schema (mittagessen/HTRMoPo, schema/v1/metadata.schema.json), copied as
# the facts this test relies on, not as the schema's text.
HTRMOPO_REQUIRED = (
    "id",
    "authors",
    "summary",
    "license",
    "software_name",
    "language",
    "script",
    "model_type",
)
HTRMOPO_ARRAYS_MIN1 = ("language", "script", "model_type")  # type array, minItems 1, uniqueItems
HTRMOPO_LANGUAGE_PATTERN = r"^[a-z]{3}"  # ISO 639-3
HTRMOPO_SCRIPTS_USED = {"Latf", "Latn"}  # both in the schema's ISO 15924 enum
HTRMOPO_LICENSES_USED = {"CC-BY-4.0", "Apache-2.0", "MIT", "CC0-1.0", "other-open"}  # members of its enum
HTRMOPO_STRING_ARRAYS = ("software_hints", "datasets", "base_model", "keywords")


def htrmopo_problems(meta: dict) -> list[str]:
    """What in ``meta`` breaks the HTRMoPo v1 facts above (empty: valid)."""
    out = [f"required {k} missing" for k in HTRMOPO_REQUIRED if k not in meta]
    for k in ("id", "summary", "license", "software_name"):
        if k in meta and not isinstance(meta[k], str):
            out.append(f"{k} is not a string")
    for k in HTRMOPO_ARRAYS_MIN1:
        v = meta.get(k)
        if k in meta and (not isinstance(v, list) or not v or len(set(v)) != len(v)):
            out.append(f"{k} must be a non-empty list of unique items")
    for code in meta.get("language") or []:
        if not re.match(HTRMOPO_LANGUAGE_PATTERN, code):
            out.append(f"language {code!r} is not ISO 639-3")
    for code in meta.get("script") or []:
        if code not in HTRMOPO_SCRIPTS_USED:
            out.append(f"script {code!r} not in the facts")
    if "license" in meta and meta["license"] not in HTRMOPO_LICENSES_USED:
        out.append(f"license {meta['license']!r} not in the facts")
    for a in meta.get("authors") or []:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            out.append(f"author {a!r} has no name")
    for k, v in (meta.get("metrics") or {}).items():
        if not isinstance(v, int | float) or isinstance(v, bool):
            out.append(f"metric {k} is not a number")
    for k in HTRMOPO_STRING_ARRAYS:
        if k in meta and not all(isinstance(x, str) for x in meta[k]):
            out.append(f"{k} must hold strings")
    return out


def split_card(text: str) -> tuple[dict, str]:
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.DOTALL)  # HTRMoPo's util._yaml_regex shape
    assert m, text[:300]
    return yaml.safe_load(m.group(1)), m.group(2)


# ------------------------------------------------------------------------------------------------ quick


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_one_idea_of_dirty_for_the_run_tag_the_environment_record_and_the_release(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    env = types.SimpleNamespace(name="cala2", freeze=lambda: "")
    clean = provenance.git_state(repo)
    assert not clean.dirty and trackinfo.git_commit(repo) == clean.commit
    assert "dirty false" in provenance.capture(env, repo)["hsbcala-git.txt"]
    (repo / "new_module.py").write_text("import os\n")  # untracked, yet imported as surely as an edited file
    state = provenance.git_state(repo)
    assert state.dirty and trackinfo.git_commit(repo) == f"{clean.commit}-dirty" == state.label()
    assert "dirty true" in provenance.capture(env, repo)["hsbcala-git.txt"]
    assert trackinfo.git_commit(tmp_path / "nowhere") == "unknown"


def _table(errors: list[int], chars: list[int] | None = None) -> champion.LineTable:
    n = len(errors)
    return champion.LineTable(
        tuple(f"k{i}" for i in range(n)), ("",) * n, tuple(chars or [40] * n), tuple(errors)
    )


def test_card_leaves_unknown_values_missing_and_never_invents_them():
    cfg = compose_eval(["script=antiqua", "version=cala1"])
    facts = {
        "name": "hsblatin.cala1",
        "default_summary": "Upper Sorbian antiqua text line recognition, Calamari 1.0.7",
        "calamari_version": "1.0.7",
        "checkpoint": "best.ckpt.json",
        "iso15924": cfg.script.iso15924,
        "script": "antiqua",
        "version": "cala1",
        "network": "cnn=40:3x3",
        "charset_size": 80,
        "model_files": ["best.ckpt.json", "best.ckpt.h5"],
        "training": {},
        "settings": {"settings": "missing (no MLflow training run found for this model)"},
        "base_model": None,
        "base_model_url": None,
        "sets": [{"name": "val", "overall": {"cer": None, "interval": None}, "wer": None}],
        "normalization": "NFC",
        "level": 0.95,
        "predict_command": "calamari-predict --checkpoint hsblatin.cala1/best.ckpt.json",
        "provenance": {"commit": None, "dirty": False, "mlflow": None},
    }
    meta, text = split_card(modelcard.render(cfg.release, facts))
    assert meta["script"] == ["Latn"] and meta["language"] == ["hsb"] and meta["software_name"] == "calamari"
    assert (
        "authors" not in meta and "license" not in meta and "metrics" not in meta and "base_model" not in meta
    )
    assert set(htrmopo_problems(meta)) == {"required authors missing", "required license missing"}
    for key in ("authors", "license", "data_url", "data_license", "description"):
        assert f"missing (set `release.{key}`)" in text
    assert modelcard.missing(cfg.release) == [
        "release.authors",
        "release.license",
        "release.data_url",
        "release.data_license",
        "release.description",
    ]


def test_champion_decision_needs_the_interval_to_exclude_zero():
    base = _table([4, 0, 6, 2, 3, 5, 1, 0, 2, 4] * 5)
    first = champion.decide(base, "1", None, None)
    assert first.promote and first.message == "v1 is the first version: champion"
    slightly = _table([e - (i == 0) for i, e in enumerate(base.errors)])  # one error fewer: noise
    d = champion.decide(slightly, "2", base, "1")
    assert not d.promote and d.message.startswith("not distinguishable from champion v1 (difference -0.")
    much = _table([e // 2 for e in base.errors])
    d = champion.decide(much, "3", base, "1")
    assert d.promote and d.difference["high"] < 0 and d.message.startswith("v3 replaces champion v1")
    assert champion.LineTable.loads(much.dumps()) == much


# ------------------------------------------------------------------------------------------------ slow


def _release(multirun, version):
    result, _ = _ok(multirun, version)
    return result, Path(result["export"])


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_release_card_resource_entry_and_layout(multirun, version, variant_lines, tmp_path):
    result, archive = _release(multirun, version)
    name = f"hsbfraktur.{version}"
    # 1. the card, HTRMoPo v1, from the evaluation's own figures
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        card = tar.extractfile(f"{name}/README.md").read().decode("utf-8")
        git_txt = tar.extractfile(f"{name}/provenance/hsbcala-git.txt").read().decode("utf-8")
        freeze = tar.extractfile(f"{name}/provenance/{version}-freeze.txt").read().decode("utf-8")
        tar.extractall(tmp_path / "unpacked", filter="data")
    meta, text = split_card(card)
    assert htrmopo_problems(meta) == []
    main = result["sets"][0]
    assert meta["script"] == ["Latf"] and meta["language"] == ["hsb"]
    assert meta["authors"] == [{"name": "Test Author", "affiliation": "Test Institute"}]
    assert meta["metrics"]["cer"] == pytest.approx(main["overall"]["cer"], abs=1e-6)
    assert meta["metrics"]["cer_low"] <= meta["metrics"]["cer"] <= meta["metrics"]["cer_high"]
    pkg = engines.get(version)  # the exact engine: calamari-ocr's pin appears in the frozen packages
    assert f"calamari-ocr=={meta['software_hints'][0].split('==')[1]}" in freeze, pkg
    assert "Sorbian letter" in text or not any(r["gt"] for r in main["sorbian_letters"])
    assert "| class | CER |" in text and "WER" in text and "missing (set `release.data_url`)" in text
    assert re.search(r"^commit [0-9a-f]{40}\ndirty (true|false)\n", git_txt)
    assert result["mlflow"]["run_id"] in text
    # 2. the OCR-D resource entry beside the archive, in ocrd resmgr's resource-list shape
    entry_file = archive.with_name(archive.name.removesuffix(".tar.gz") + ".ocrd-resources.yml")
    assert Path(result["ocrd_resources"]) == entry_file
    listed = yaml.safe_load(entry_file.read_text(encoding="utf-8"))
    (res,) = listed["ocrd-calamari-recognize"]
    assert res == {
        "name": name,
        "url": str(archive),
        "type": "archive",
        "path_in_archive": name,
        "size": archive.stat().st_size,
        "description": meta["summary"],
        "version_range": {"cala1": ">= 1.0.0, < 2.0.0", "cala2": ">= 2.0.0"}[version],
    }
    # ocrd_calamari loads every *.ckpt.json of checkpoint_dir: exactly one, with its weights beside it
    folder = tmp_path / "unpacked" / res["path_in_archive"]
    (ckpt,) = glob.glob(f"{folder}/*.ckpt.json")
    assert {f"{name}/README.md", f"{name}/hsbcala-release.json"} <= names
    # 3. calamari-predict from the unpacked folder, in the version's engine env: the CER as before packing
    from hsbcala.evaluate import run as evaluate

    cfg = compose_eval([f"version={version}", "eval.batch_size=8"])
    p = types.SimpleNamespace(version=version, env=envs.resolve(cfg, ROOT))
    images = sorted(x for x in variant_lines.glob("*.png") if x.with_suffix(".gt.txt").is_file())
    links = evaluate.stage(images, tmp_path / "lines")
    preds, _, argv = evaluate.predict(
        p, Path(ckpt), images, links, tmp_path / "pred", tmp_path / "predict.log", cfg
    )
    assert str(folder) in " ".join(argv)
    rules = engines.get(version).eval_rules
    errors = chars = 0
    for img in images:
        gt = cer.normalize(img.with_suffix(".gt.txt").read_text(encoding="utf-8"), rules)
        errors += cer.distance(gt, cer.normalize(preds[img] or "", rules))
        chars += len(gt)
    assert (errors, chars) == (main["overall"]["errors"], main["overall"]["chars"])
    # 4. the release as the next fine-tuning's pretrained model: `pretrained get` installs its one model as
    #    the ensemble member a warm start takes (0.ckpt.json), the model file's bytes unchanged
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"models": {name: {"calamari": version, "url": archive.as_uri()}}}))
    installed = pretrained_cli(
        "get", name, "--registry", registry, "--from", archive, "--dir", tmp_path / "pre"
    )
    assert installed.code == 0, installed.err
    member = tmp_path / "pre" / name / "0.ckpt.json"
    assert member.read_bytes() == Path(ckpt).read_bytes() and engines.weights_of(member)
    assert "installed as the one ensemble member 0.ckpt.json" in installed.err


def _real_table(job_dir: Path) -> champion.LineTable:
    rows = scoring.read_lines(job_dir / "eval" / scoring.LINES_FILE)
    images = [Path(r["image"]) for r in rows]
    gt = {img: img.with_suffix(".gt.txt").read_text(encoding="utf-8") for img in images}
    return champion.table_of(images, gt, rows)


@pytest.mark.slow
def test_champion_moves_only_on_a_real_win(multirun, tmp_path):
    from mlflow import MlflowClient

    from hsbcala.track import evaluation

    _, job_dir = _ok(multirun, "cala2")
    real = _real_table(job_dir)  # the tiny cala2 model's per-line results on the evaluation lines
    assert sum(real.errors) > 20, "the tiny model should make errors to compare"
    # version 2: one error fewer on one line (a lower CER, but noise); version 3: half the errors on every line
    fewer = next(i for i, e in enumerate(real.errors) if e)
    noise = champion.LineTable(
        real.keys, real.documents, real.chars, tuple(e - (i == fewer) for i, e in enumerate(real.errors))
    )
    better = champion.LineTable(real.keys, real.documents, real.chars, tuple(e // 2 for e in real.errors))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    exp = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model("hsbfraktur")

    def register(table: champion.LineTable) -> dict:
        run = client.create_run(exp)
        mv = client.create_model_version("hsbfraktur", source=str(tmp_path), run_id=run.info.run_id)
        version = str(mv.version)
        ask = champion.decider(table, version)
        return evaluation.record_and_decide(client, "hsbfraktur", version, run.info.run_id, table, ask)

    def holder() -> str:
        return str(client.get_model_version_by_alias("hsbfraktur", "champion").version)

    first = register(real)
    assert first["promoted"] and holder() == "1"
    second = register(noise)
    assert not second["promoted"] and holder() == "1"
    assert re.match(r"not distinguishable from champion v1 \(difference -\d\.\d\d \[-\d", second["decision"])
    tag = client.get_model_version("hsbfraktur", "2").tags["hsbcala.champion_decision"]
    assert tag == second["decision"]
    other_lines = champion.LineTable(
        real.keys[1:], real.documents[1:], real.chars[1:], (0,) * (len(real.keys) - 1)
    )
    refused = register(other_lines)  # perfect, but on other lines: not compared
    assert not refused["promoted"] and "has no results on these evaluation lines" in refused["decision"]
    third = register(better)
    assert third["promoted"] and holder() == "4" and third["difference"]["high"] < 0
    assert third["decision"].startswith("v4 replaces champion v1 (difference -")


@pytest.mark.slow
def test_register_through_evaluate_py(tiny_models, variant_lines, tmp_path):
    """The real path: evaluate.py mlflow.register=true registers the training run's logged model, keeps its
    table, makes the first version champion and says so in the report; evaluating it again keeps the alias."""
    import json

    from mlflow import MlflowClient

    from tests.test_evaluate import base_overrides, run_evaluate

    def evaluate(run: str) -> dict:
        proc = run_evaluate(
            *base_overrides(tiny_models, variant_lines),
            f"model_dir={tiny_models / 'model-cala2'}",
            "version=cala2",
            "mlflow.register=true",
            "eval.export=false",
            f"hydra.run.dir={tmp_path / run}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads((tmp_path / run / "eval-result.json").read_text(encoding="utf-8"))
        assert f"--- registry: hsbfraktur version {result['registry']['version']}: " in proc.stdout
        return result["registry"]

    first = evaluate("one")
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_models / 'mlruns.db'}")
    holder = client.get_model_version_by_alias("hsbfraktur", "champion")
    assert first["promoted"] and str(holder.version) == first["version"]
    assert holder.tags["hsbcala.champion_decision"] == first["decision"]
    again = evaluate("two")  # the same training run: the same version, not a new one
    assert again["version"] == first["version"] and not again["promoted"]
    assert again["decision"] == f"v{first['version']} is the champion already"
