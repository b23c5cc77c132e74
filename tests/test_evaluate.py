"""evaluate.py: CER per model and variant group, agreement with calamari-eval, MLflow, tables, release export.

The quick tests check the CER arithmetic (against an independent edit distance), the normalisation rules, the
table rendering and the config. The slow ones train one tiny real model per Calamari version through the real
``train.py`` (once per session), evaluate both in ONE real multirun of ``evaluate.py`` on other books of the
shared Fraktur lines, copied under names that carry ``_GTSBB`` (binarized) and ``_GTPAGE`` (raw), and check the
result against the version's own ``calamari-eval`` on the same predictions, the MLflow runs, the tables, the
release archive and the bad-input rows.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from hsbcala import engines
from hsbcala.config import schema
from hsbcala.core.errors import ConfigError
from hsbcala.engines import envs
from hsbcala.evaluate import cer, report
from tests.conftest import ROOT, compose_cfg

VERSIONS = ("cala1", "cala2")


# ------------------------------------------------------------------------------------------------ quick


def _reference_distance(a: str, b: str) -> int:
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[:], i
        for j in range(1, len(b) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1]


def test_edit_distance_matches_an_independent_levenshtein():
    rng = random.Random(4)
    for _ in range(2000):
        a = "".join(rng.choice("aeſ ß") for _ in range(rng.randint(0, 14)))
        b = "".join(rng.choice("aeſ ß") for _ in range(rng.randint(0, 14)))
        al = cer.align(a, b)
        assert al.errors == _reference_distance(a, b), (a, b)
        # the confusions cover every edit: what they leave is matched, the same characters on both sides,
        # and each pair takes at most max(len) edits (calamari-eval's "sync errors" >= the edit distance)
        gt_side, pred_side = sum(len(g) for g, _ in al.confusions), sum(len(p) for _, p in al.confusions)
        assert len(a) - gt_side == len(b) - pred_side >= 0
        assert sum(max(len(g), len(p)) for g, p in al.confusions) >= al.errors
        assert bool(al.confusions) == bool(al.errors)


#: (GT, prediction) -> the confusions calamari-eval's synchronize gives, recorded from Calamari 2.3.1 and 1.0.7
#: (identical); the first three differ from the runs of edits along the Levenshtein path (shown after #)
CALAMARI_CONFUSIONS = {
    ("nennen Mann der und", "nnen Mann der ud"): (("ne", ""), ("n", "")),  # ("e",""), ("n",""), ("n","")
    ("Mann wird der der", "Mnn wirder der"): (("a", ""), (" d", "")),  # ("a",""), ("d ","")
    ("Sonne und wird Hornjoserbšćina", "Sonne  wrdHroešći"): (
        ("und", ""),
        ("i", ""),
        (" ", ""),
        ("", "r"),
        ("rnjos", ""),
        ("rb", ""),
        ("na", ""),
    ),  # … ("o",""), ("nj",""), ("s","") …
    ("Wurm und", "Wnrm vnd"): (("u", "n"), ("u", "v")),
    ("rn", "m"): (("rn", "m"),),
    ("ab", "ba"): (("", "b"), ("b", "")),
    ("abc", ""): (("abc", ""),),
    ("", "x"): (("", "x"),),
    ("Hornjoserbšćina", "Hornjoserbscina"): (("šć", "sc"),),
}


def test_confusions_are_grouped_as_calamari_eval_groups_them():
    for (gt, pred), expected in CALAMARI_CONFUSIONS.items():
        assert cer.align(gt, pred).confusions == expected, (gt, pred)
    al = cer.align("Wurm und", "Wnrm vnd")
    assert (al.substitutions, al.deletions, al.insertions) == (2, 0, 0)
    assert cer.align("same", "same").confusions == () and cer.align("", "x").errors == 1


def test_cer_sums_errors_over_characters_not_per_line_rates():
    s = cer.score([("abcd", "abcd"), ("ab", "")])  # per line 0 % and 100 %: the mean would be 50 %
    assert (s.errors, s.chars) == (2, 6) and s.cer == pytest.approx(2 / 6)
    assert cer.Score().cer is None


def test_normalisation_is_nfc_and_calamaris_whitespace_and_cala1_dash_rules():
    decomposed = "c\u030c"  # c + combining caron
    assert cer.normalize(f"  {decomposed}  a\t\tb \n", "calamari2") == "č a b"
    assert cer.normalize("a — b – µ", "calamari2") == "a — b – µ"
    assert cer.normalize("a — b – µ", "calamari1") == "a - b - μ"
    assert {v: engines.get(v).eval_rules for v in VERSIONS} == {"cala1": "calamari1", "cala2": "calamari2"}


def _result(model, overall, groups, error=None, **extra):
    sets = (
        []
        if error
        else [
            {
                "name": "val",
                "overall": {"lines": 10, "cer": overall},
                "groups": {g: (None if v is None else {"cer": v}) for g, v in groups.items()},
            }
        ]
    )
    return {
        "model": model,
        "version": "cala2",
        "sets": sets,
        "groups": {g: [f"*_{g}*"] for g in groups},
        "error": error,
        "normalization_description": "NFC",
        **extra,
    }


def test_table_marks_missing_models_and_groups_instead_of_numbers(tmp_path):
    results = [
        _result("fraktur-cala2", 0.0234, {"binarized": 0.02, "raw": None}),
        _result("antiqua-cala1", None, {"binarized": None, "raw": None}, error="model_dir x holds no model"),
    ]
    md = report.markdown(results)
    rows = [r for r in md.splitlines() if r.startswith("| ") and not r.startswith("| model")]
    assert len(rows) == 2
    assert (
        "| fraktur-cala2 | 10 | 2.34 % | 2.00 % | n/a |" in rows[0]
        and "raw: no line matches *_raw*" in rows[0]
    )
    assert rows[1].count("missing") >= 4 and "model_dir x holds no model" in rows[1]
    lines = list(csv.reader(report.csv_text(results).splitlines()))
    assert lines[0][:7] == ["model", "script", "version", "lines", "cer", "cer_binarized", "cer_raw"]
    assert lines[1][4:7] == ["0.023400", "0.020000", ""] and lines[2][4:7] == ["", "", ""]
    assert lines[2][-2] == "missing" and lines[0][-2:] == ["status", "notes"]
    png = report.chart(results, tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def compose_eval(overrides, *, hydra_node: bool = False):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("evaluate", overrides=list(overrides), return_hydra_config=hydra_node)


@pytest.mark.parametrize("script", ["fraktur", "antiqua"])
@pytest.mark.parametrize("version", VERSIONS)
def test_evaluate_config_resolves_model_dir_and_data_as_training(script, version):
    cfg = compose_eval([f"script={script}", f"version={version}"])
    train_cfg = compose_cfg([f"script={script}", f"version={version}"])
    assert cfg.model_dir == train_cfg.model_dir and list(cfg.data.val) == list(train_cfg.data.val)
    assert cfg.eval.groups == {
        "binarized": ["*_GTOLENA*", "*_GTSBB*", "*_GTOCROPY*", "*_GTLINES*"],
        "raw": ["*_GTPAGE*"],
    }
    assert train_cfg.eval is None  # training configs carry no evaluation settings
    schema.check(train_cfg)


def test_eval_keys_do_not_change_the_model_dir_of_a_sweep_point():
    """``evaluate.py -m train.batch_size=16,32 +eval.groups.x=[…]`` finds the models that sweep trained."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    cfg = compose_eval(
        ["train.batch_size=32", "+eval.groups.x=[a]", "eval.batch_size=4", "version=cala1"], hydra_node=True
    )
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        assert cfg.model_dir.endswith("/models/hsbfraktur.cala1.demo@train.batch_size=32")
        assert cfg.mlflow.run_name == "fraktur-cala1-batch_size=32"  # short sweep label
    finally:
        HydraConfig.instance().cfg = None


def test_bad_eval_options_fail_with_the_key():
    from omegaconf import open_dict

    from hsbcala.evaluate import run as evaluate

    with pytest.raises(ConfigCompositionException) as info:  # an Enum field: refused while composing
        compose_eval(["eval.normalization=nfd"])
    assert "full_key: eval.normalization" in str(info.value.__cause__)
    cfg = compose_eval([])
    with open_dict(cfg):
        cfg.eval.groups["bad name"] = ["*x*"]
    with pytest.raises(ConfigError, match=r"eval.groups.bad name: a name may hold only"):
        evaluate.check(cfg)
    with pytest.raises(ConfigError, match=r"eval.extra.val: the name of the main evaluation set"):
        evaluate.check(compose_eval(["+eval.extra.val=[x.png]"]))
    # A subprocess: evaluate.py itself, as a user starts it (its one quick test of the entry point).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "eval.bogus=1"],
        capture_output=True,
        check=False,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode != 0 and "eval.bogus" in proc.stderr


# ------------------------------------------------------------------------------------------------ slow


def run_evaluate(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *overrides],
        capture_output=True,
        check=False,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def base_overrides(tmp: Path, lines: Path) -> list[str]:
    return [
        f"paths.root={tmp}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
        f"eval.data=[{lines}/*.png]",
        f"hydra.run.dir={tmp / 'eval-run'}",
        "eval.batch_size=8",
    ]


def _ok(multirun, version):
    _, _, results = multirun
    result, job_dir = results[(version, f"model-{version}")]
    assert result["error"] is None, result["error"]
    return result, job_dir


def calamari_eval(version: str, gt_dir: Path) -> tuple[int, int, float, dict[tuple[str, str], int]]:
    """(errors, GT characters, printed percent, printed confusions) of the version's own calamari-eval."""
    cfg = compose_cfg([f"version={version}"])
    program = envs.resolve(cfg, ROOT).program("calamari-eval")
    argv = (
        [program, "--gt.texts", f"{gt_dir}/*.gt.txt", "--n_confusions", "20"]
        if version == "cala2"
        else [program, "--gt", f"{gt_dir}/*.gt.txt", "--no_progress_bars", "--n_confusions", "20"]
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    m = re.search(r"error rate of ([\d.]+)% \((\d+) errs, (\d+) total chars", proc.stdout + proc.stderr)
    assert m, (proc.stdout + proc.stderr)[-3000:]
    confusions = {
        (c.group(1), c.group(2)): int(c.group(3))
        for c in re.finditer(r"^\{(.*)\}\s+\{(.*)\}\s+(\d+)\s+[\d.]+%$", proc.stdout, re.MULTILINE)
    }
    return int(m.group(2)), int(m.group(3)), float(m.group(1)), confusions


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_cer_agrees_with_calamari_eval_on_the_same_predictions(multirun, version, tmp_path):
    result, job_dir = _ok(multirun, version)
    with open(job_dir / "eval" / "lines.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == result["sets"][0]["overall"]["lines"] == 97
    assert any(r["prediction"] for r in rows), "the tiny model predicted nothing at all"
    for k, row in enumerate(rows):  # the original GT file and the prediction, paired by name
        image = Path(row["image"])
        shutil.copy(image.with_suffix(".gt.txt"), tmp_path / f"{k:04d}.gt.txt")
        (tmp_path / f"{k:04d}.pred.txt").write_text(row["prediction"], encoding="utf-8")
    errs, chars, percent, printed = calamari_eval(version, tmp_path)
    overall = result["sets"][0]["overall"]
    assert (overall["errors"], overall["chars"]) == (errs, chars)
    assert abs(100 * overall["cer"] - percent) <= 0.01
    # the confusions are grouped as calamari-eval groups them: the same count for each confusion it prints (the
    # tiny models' many ties at count 1 make its top 20 partly arbitrary, so every line's confusions are summed)
    counts = Counter(c for row in rows for c in cer.align(row["gt"], row["prediction"]).confusions)
    assert len(printed) >= 5, printed
    assert {k: counts[k] for k in printed} == printed
    with open(job_dir / "eval" / "confusions.tsv", encoding="utf-8") as f:
        top = [
            (json.loads(g), json.loads(p), int(n))
            for n, g, p in (x.rstrip("\n").split("\t") for x in list(f)[1:])
        ]
    assert [n for *_, n in top] == [n for _, n in counts.most_common(len(top))]
    assert all(counts[(g, p)] == n for g, p, n in top)
    assert result["normalization"] == {"cala1": "calamari1", "cala2": "calamari2"}[version]


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_group_cers_recombine_to_the_overall_cer(multirun, version):
    result, _ = _ok(multirun, version)
    s = result["sets"][0]
    binarized, raw = s["groups"]["binarized"], s["groups"]["raw"]
    assert s["groups"]["olena"] is None  # no line matches: n/a, not 0
    assert binarized["lines"] + raw["lines"] == s["overall"]["lines"] and s["ungrouped"] == 0
    assert binarized["chars"] + raw["chars"] == s["overall"]["chars"]
    weighted = (binarized["cer"] * binarized["chars"] + raw["cer"] * raw["chars"]) / s["overall"]["chars"]
    assert weighted == pytest.approx(s["overall"]["cer"], abs=1e-12)
    assert s["skipped"] == 1  # the image without GT


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_mlflow_training_run_carries_metrics_and_artifacts(multirun, version):
    import mlflow

    result, _ = _ok(multirun, version)
    tmp = multirun[1].parent
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns.db'}")
    state = json.loads((tmp / f"model-{version}" / "hsbcala-state.json").read_text())
    assert result["mlflow"]["run_id"] == state["run_id"] and not result["mlflow"]["separate_run"]
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED"  # logging the evaluation does not reopen the training run
    m = run.data.metrics
    assert m["eval/eval/cer"] == pytest.approx(result["sets"][0]["overall"]["cer"])
    assert {"eval/eval/cer_binarized", "eval/eval/cer_raw", "best_val_cer"} <= set(m)
    assert "eval/eval/cer_olena" not in m
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/eval-result.json", "eval/cer-table.md", "eval/cer-table.csv", "eval/cer-table.png"} <= arts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval/eval")} == {
        "eval/eval/lines.tsv",
        "eval/eval/confusions.tsv",
        "eval/eval/characters.tsv",
    }
    lo, hi = m["eval/eval/cer_low"], m["eval/eval/cer_high"]
    assert lo <= m["eval/eval/cer"] <= hi and lo < hi  # 97 lines: a real interval
    assert "eval/eval/wer" in m and "eval/eval/cer_class_letters" in m
    conf = Path(client.download_artifacts(run.info.run_id, "eval/eval/confusions.tsv"))
    assert 1 < len(conf.read_text(encoding="utf-8").splitlines()) <= 51


@pytest.mark.slow
def test_multirun_table_has_one_row_per_model_and_marks_the_missing_ones(multirun):
    proc, sweep, results = multirun
    assert proc.returncode == 2, proc.stderr[-3000:]  # some models could not be evaluated
    assert "Traceback" not in proc.stderr
    assert len(results) == 6
    md = (sweep / "cer-table.md").read_text(encoding="utf-8")
    table = md.split("\n\n")[0]  # the models' table; the paired differences follow
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| model")]
    assert len(rows) == 6
    assert all(
        r.startswith(("| fraktur-cala1 (", "| fraktur-cala2 (")) for r in rows
    )  # no eval keys in names
    ok = [r for r in rows if " % [" in r]  # a CER with its interval
    assert len(ok) == 2 and all("olena: no line matches *_GTOLENA*" in r and "| n/a |" in r for r in ok)
    missing = [r for r in rows if r not in ok]
    assert all("| missing | missing |" in r for r in missing)
    assert sum("holds no trained model" in r for r in missing) == 2
    assert sum("holds a cala2 model, but version=cala1" in r for r in missing) == 1
    assert sum("holds a cala1 model, but version=cala2" in r for r in missing) == 1
    assert len(list(csv.reader((sweep / "cer-table.csv").read_text(encoding="utf-8").splitlines()))) == 7
    assert (sweep / "cer-table.png").read_bytes()[:4] == b"\x89PNG"
    for line in ("holds no trained model", "but version=cala1"):
        assert any(line in x and x.startswith("hsbcala: error:") for x in proc.stderr.splitlines())
    # the comparison is also in MLflow
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{sweep.parent / 'mlruns.db'}")
    exp = client.get_experiment_by_name("hsbcala-evaluation")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # runs and charts, not GenAI
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "cer-table.md" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    # the two evaluated models, paired on the same lines (run names with '/' from the model dirs are fine)
    assert "Paired differences" in md and "text normalised as calamari1 vs calamari2" in md
    assert [k for k in runs[0].data.metrics if k.startswith("diff/eval/")]


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_release_export_packs_model_and_metadata(multirun, version):
    result, _ = _ok(multirun, version)
    archive = Path(result["export"])
    assert archive.name.startswith(f"hsbfraktur.{version}-") and archive.name.endswith(".tar.gz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        meta = json.loads(tar.extractfile(f"hsbfraktur.{version}/hsbcala-release.json").read())
    weights = "best.ckpt/variables/variables.index" if version == "cala2" else "best.ckpt.h5"
    assert {
        f"hsbfraktur.{version}/best.ckpt.json",
        f"hsbfraktur.{version}/{weights}",
        f"hsbfraktur.{version}/CER.md",
    } <= names
    assert meta["script"] == "fraktur" and meta["version"] == version
    assert meta["training_data"]["train"] and meta["training_data"]["source"] == "the MLflow training run"
    assert "| fraktur-" in meta["cer_table"] and meta["hsbcala_commit"]


@pytest.mark.slow
def test_bad_input_one_clear_line(tiny_models, variant_lines, tmp_path):
    tmp = tiny_models
    base = [
        *base_overrides(tmp, variant_lines),
        f"model_dir={tmp / 'model-cala2'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]

    def fails(*overrides: str, needle: str) -> None:
        proc = run_evaluate(*base, *overrides)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert any(x.startswith("hsbcala: error:") and needle in x for x in proc.stderr.splitlines()), (
            proc.stderr[-2000:]
        )

    fails(
        f"eval.data=[{tmp_path}/nowhere/*.png]",
        needle=f"eval.data: pattern '{tmp_path}/nowhere/*.png' matches no file",
    )
    fails("eval.skip_invalid=false", needle="nogt_GTSBB.png: no ground truth file")
    fails(f"+eval.extra.more=[{tmp_path}/none/*.png]", needle="eval.extra.more: pattern")
    fails(f"model_dir={tmp_path / 'never-trained'}", needle="does not exist: no model to evaluate")


@pytest.mark.slow
def test_without_eval_data_the_models_own_validation_lines_are_evaluated(tiny_models, tmp_path, shared_books):
    """The configuration given to evaluate.py is the embedded demo's (synthetic lines), but the model was
    validated on book 2: the manifest decides, and the difference is named."""
    tmp = tiny_models
    manifest = json.loads((tmp / "model-cala2" / "manifest.json").read_text(encoding="utf-8"))
    recorded = {x["image"] for x in manifest["lines"] if x["split"] == "val"}
    proc = run_evaluate(
        f"paths.root={tmp_path}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
        f"model_dir={tmp / 'model-cala2'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "eval.batch_size=8",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"evaluating on the {len(recorded)} validation lines recorded in" in proc.stderr
    assert "is not what the model was validated on" in proc.stderr
    result = json.loads((tmp_path / "run" / "eval-result.json").read_text(encoding="utf-8"))
    assert result["sets"][0]["overall"]["lines"] == len(recorded)
    lines_tsv = (tmp_path / "run" / "val" / "lines.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert {row.split("\t")[0] for row in lines_tsv} == recorded
    assert "also training lines" not in proc.stderr
    assert not (tmp_path / "data" / "synthetic").exists(), "evaluation rendered the demo set"


@pytest.mark.slow
def test_recorded_lines_that_are_gone_say_how_to_point_elsewhere(tiny_models, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_models / "model-cala2", model)
    m = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    for x in m["lines"]:
        x["image"] = "/dev/shm/hsbcala/fraktur/val/" + Path(x["image"]).name
    (model / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    proc = run_evaluate(f"paths.root={tmp_path}", f"model_dir={model}", f"hydra.run.dir={tmp_path / 'run'}")
    errors = [x for x in proc.stderr.splitlines() if x.startswith("hsbcala: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "staged for the job" in errors[0] and "eval.data=[GLOBS]" in errors[0]


@pytest.mark.slow
def test_baseline_row_and_paired_change_with_the_models_own_engine(tiny_models, variant_lines, tmp_path):
    """The tiny Calamari 1 model, with its first checkpoint standing in as the model it warm-started from (no
    extra training: a real, different model of the same version in ``warmstart/``, where a training keeps
    its copy)."""
    import mlflow

    model = tmp_path / "model"
    shutil.copytree(tiny_models / "model-cala1", model)
    first = min(model.glob("model_0*.ckpt.json"))
    (model / "warmstart").mkdir()
    shutil.copy(first, model / "warmstart" / "0.ckpt.json")
    shutil.copy(first.with_suffix(".h5"), model / "warmstart" / "0.ckpt.h5")
    proc = run_evaluate(
        *base_overrides(tiny_models, variant_lines),
        "version=cala1",
        f"model_dir={model}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "eval.baseline=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "eval-result.json").read_text(encoding="utf-8"))
    b = result["baseline"]
    assert b["error"] is None and b["checkpoint"] == str(model / "warmstart" / "0.ckpt.json")
    assert b["sets"][0]["overall"]["lines"] == result["sets"][0]["overall"]["lines"] == 97
    d = result["baseline_differences"][0]
    change = result["sets"][0]["overall"]["cer"] - b["sets"][0]["overall"]["cer"]
    assert (
        d["point"] == pytest.approx(change, abs=1e-12)
        and d["interval"]["low"] <= d["point"] <= d["interval"]["high"]
    )
    assert "fine-tuning changed CER on 'eval' by" in proc.stderr
    assert ("WORSE than its baseline" in (result.get("flag") or "")) == (change > 0)
    md = (tmp_path / "run" / "cer-table.md").read_text(encoding="utf-8")
    assert "| fraktur-cala1 baseline (warm start 0.ckpt.json) | 97 |" in md and "Paired differences" in md
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_models / 'mlruns.db'}")
    m = client.get_run(result["mlflow"]["run_id"]).data.metrics
    assert m["eval/eval/baseline_cer"] == pytest.approx(b["sets"][0]["overall"]["cer"])
    assert m["eval/eval/finetune_change"] == pytest.approx(d["point"])
    # the same model directory with its warm start gone (the recorded model too): a missing row with the reason,
    # not a number (a directory recording no warm start at all was trained from scratch: tests/test_eval_demo.py)
    shutil.rmtree(model / "warmstart")
    gone = tmp_path / "pretrained" / "gone" / "0.ckpt.json"
    (model / "codec-report.json").write_text(json.dumps({"model": str(gone)}), encoding="utf-8")
    proc = run_evaluate(
        *base_overrides(tiny_models, variant_lines),
        "version=cala1",
        f"model_dir={model}",
        f"hydra.run.dir={tmp_path / 'run2'}",
        "eval.baseline=true",
        "eval.intervals.resamples=10",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "run2" / "cer-table.md").read_text(encoding="utf-8")
    row = next(r for r in md.splitlines() if r.startswith("| fraktur-cala1 baseline"))
    assert "| missing | missing |" in row and "the warm-start model is gone" in row


@pytest.mark.slow
def test_a_scancel_during_the_checkpoint_passes_ends_the_evaluation_run_killed(
    tiny_models, variant_lines, tmp_path
):
    """SIGTERM after the model's own pass (here: while the checkpoints are scored) is an interruption: exit 130,
    the separate evaluation run KILLED, never left RUNNING."""
    import mlflow

    from tests.processes import start_training, wait_until

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_models / 'mlruns.db'}")

    def runs() -> dict[str, str]:
        return {
            r.info.run_id: r.info.status
            for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])
        }

    before = runs()
    run_dir = tmp_path / "run"
    proc = start_training(
        [
            *base_overrides(tiny_models, variant_lines),
            "version=cala1",
            f"model_dir={tiny_models / 'model-cala1'}",
            f"hydra.run.dir={run_dir}",
            "eval.checkpoints=all",
            "eval.mlflow_run=separate",
        ],
        script="evaluate.py",
    )
    try:
        wait_until(
            lambda: (run_dir / "checkpoints" / "predict-001.log").is_file(), proc, 600, "the checkpoints"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 130, proc.stderr.read()[-3000:]
    finally:
        proc.kill()
    assert "evaluation interrupted by SIGTERM" in proc.stderr.read()
    new = {run_id: status for run_id, status in runs().items() if run_id not in before}
    assert list(new.values()) == ["KILLED"], new
    assert runs().items() >= before.items()  # the training runs untouched


@pytest.mark.slow
def test_an_unreadable_calamari_2_checkpoint_costs_only_its_own_row(tiny_models, tmp_path):
    """The export runs in one engine process; a truncated checkpoint gets its error, the others their model."""
    engine = engines.get("cala2")
    model = tmp_path / "model-cala2"
    shutil.copytree(tiny_models / "model-cala2", model)
    found = sorted(engine.checkpoints(model), key=engine.checkpoint_key)
    data = next((found[0].parent / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    out = engine.predictable(found, tmp_path / "exported", envs.resolve(compose_cfg(["version=cala2"]), ROOT))
    (bad, why), *rest = out
    assert bad is None and "checkpoint_0001" in why, why
    assert rest and all(
        m is not None and m.is_file() and Path(str(m)[: -len(".json")]).is_dir() for m, _ in rest
    )
    assert [m.name for m, _ in rest] == [f"stage1-epoch{e:04d}.ckpt.json" for e in range(2, len(found) + 1)]


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_every_checkpoint_is_scored_and_logged_as_a_curve(tiny_models, variant_lines, tmp_path, version):
    """Calamari 1's checkpoints are models; Calamari 2's are training states the engine exports first."""
    import mlflow

    from hsbcala import engines

    model = tiny_models / f"model-{version}"
    engine = engines.get(version)
    found = sorted(engine.checkpoints(model), key=engine.checkpoint_key)
    assert found, f"the tiny {version} training wrote no checkpoint"
    proc = run_evaluate(
        *base_overrides(tiny_models, variant_lines),
        f"version={version}",
        f"model_dir={model}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "eval.checkpoints=all",
        "eval.intervals.resamples=100",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "eval-result.json").read_text(encoding="utf-8"))
    rows = result["checkpoints"]
    assert [r["checkpoint"] for r in rows] == [str(c) for c in found]
    assert all(r["error"] is None and r["sets"]["eval"]["cer"] is not None for r in rows)
    best = result["best_checkpoint"]["eval"]
    assert best["cer"] == min(r["sets"]["eval"]["cer"] for r in rows)
    assert f"best checkpoint on 'eval': {engine.checkpoint_name(Path(best['checkpoint']))}" in proc.stderr
    # the model the training exported as best is one of its checkpoints (Calamari 2: with the moving-average
    # weights its validation used): scored from the checkpoint, the same CER to the last digit
    exported = result["sets"][0]["overall"]["cer"]
    assert exported in [r["sets"]["eval"]["cer"] for r in rows], (exported, rows)
    # Calamari 2's exports are kept for the best checkpoint only; Calamari 1's checkpoints are left alone
    kept = [Path(r["model"]) for r in rows if r["model"]]
    assert kept == ([Path(best["model"])] if version == "cala2" else [engine.record(c) for c in found])
    assert all(m.is_file() for m in kept) and best["model"] in map(str, kept)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_models / 'mlruns.db'}")
    history = [
        (m.step, m.value)
        for k in ("eval/eval/checkpoint_cer_stage1", "eval/eval/checkpoint_cer_stage2")
        for m in client.get_metric_history(result["mlflow"]["run_id"], k)
    ]
    assert sorted(history) == sorted((r["step"], r["sets"]["eval"]["cer"]) for r in rows)
    # steps are epochs, as the training's val_cer (Calamari 1's iterations converted): within its epochs
    val_steps = [m.step for m in client.get_metric_history(result["mlflow"]["run_id"], "val_cer")]
    assert all(0 <= step <= max(val_steps) + 1 for step, _ in history), (history, val_steps)
