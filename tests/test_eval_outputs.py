"""What evaluate.py writes besides the CER (quick tests, no engine): intervals and classes in the per-set files
and eval-result, the comparison's paired differences, MLflow-safe metric names, the comparison's MLflow failure
as an error, the table and chart with intervals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hsbcala.evaluate import comparison, intervals, report, scoring
from hsbcala.evaluate import sets as evalsets

GT = {
    "b1/l1.png": "Hdźe je wón?",
    "b1/l2.png": "Wón je tu.",
    "b2/l3.png": "Mjeńši brat",
    "b2/l4.png": "Dobry dźeń, Ł",
    "b3/l5.png": "Wěc 12",
}
PRED = {
    "b1/l1.png": "Hdze je won?",
    "b1/l2.png": "Wón je tu.",
    "b2/l3.png": "Mjensi brat",
    "b2/l4.png": "Dobry dzen, L",
    "b3/l5.png": "Wec 12",
}


def _set(tmp: Path, documents: bool) -> evalsets.EvalSet:
    images = tuple(tmp / k for k in GT)
    s = evalsets.EvalSet(
        "val",
        "eval.data",
        ["*.png"],
        images,
        {tmp / k: v for k, v in GT.items()},
        (),
        {"odd": (images[0], images[2], images[4]), "none": ()},
        ungrouped=2,
    )
    recorded = {tmp / k: k.split("/")[0] for k in GT} if documents else {}
    assert evalsets.assign_documents(s, recorded, "auto") is None
    return s


def _score(tmp: Path, documents: bool = True, pred=PRED, name: str = "job") -> dict:
    s = _set(tmp, documents)
    out = tmp / name
    result = scoring.score_sets(
        [s], {"odd": ["x"], "none": ["y"]}, "calamari2", {tmp / k: v for k, v in pred.items()}, out
    )
    result.update(model=f"fraktur-cala2-train.batch_size={name},data.train=a", version="cala2")
    result[comparison.JOB_DIR] = str(out)
    return result


def test_result_and_files_carry_intervals_classes_letters_and_wer(tmp_path):
    result = _score(tmp_path)
    s = result["sets"][0]
    ov = s["overall"]
    assert ov["cer"] == 8 / 52 and ov["errors"] == 8  # ź ó | - | ń š | ź ń Ł | ě
    assert ov["interval"]["unit"] == "documents" and ov["interval"]["n_units"] == 3
    assert ov["interval"]["low"] <= ov["cer"] <= ov["interval"]["high"]
    assert s["interval_unit"] == "3 documents (manifest.json)"
    assert s["groups"]["none"] is None and s["groups"]["odd"]["interval"]["n_units"] == 3
    assert s["wer"]["words"] == 13 and s["wer"]["errors"] == 6  # 2 + 0 + 1 + 2 + 1
    letters = {r["char"]: r for r in s["sorbian_letters"]}
    assert letters["ń"]["recall"] == 0.0 and letters["ń"]["misread"] == "n" and letters["ó"]["recall"] == 0.5
    assert (
        s["classes"]["sorbian"]["chars"] == 9
        and s["classes"]["sorbian"]["errors"] == 8
        and s["classes"]["digits"]["cer"] == 0.0
    )
    text = (tmp_path / "job" / "val" / "lines.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    assert [r["document"] for r in rows] == ["b1", "b1", "b2", "b2", "b3"]
    assert rows[0]["word_errors"] == "2" and rows[0]["words"] == "3"
    chars = (tmp_path / "job" / "val" / "characters.tsv").read_text(encoding="utf-8").splitlines()
    assert chars[0].startswith("char\tclass\tgt\tright\trecall") and any(
        x.startswith('"ź"\tsorbian') for x in chars
    )
    assert s["worst_lines"][0]["errors"] == 3  # "Dobry dźeń, Ł": ź, ń, Ł
    m = scoring.metrics_of(result)
    assert m["eval/val/cer"] == ov["cer"] and m["eval/val/cer_low"] == ov["interval"]["low"]
    assert m["eval/val/recall_ń"] == 0.0 and "eval/val/cer_none" not in m and "eval/val/recall_Ě" not in m
    text = report.text_report(result)
    assert "CER 15.38 %" in text and "intervals over 3 documents" in text and '"ń" → "n"' in text
    assert '    ń      2     0.0 %, read as "n" 2×' in text


def test_lines_without_known_documents_resample_directories_and_too_few_say_so(tmp_path):
    result = _score(tmp_path, documents=False)  # other books: one document per directory, as data.split
    assert result["sets"][0]["overall"]["interval"]["unit"] == "documents"
    assert result["sets"][0]["interval_unit"] == "3 documents (by directory, as data.split cuts them)"
    s = _set(tmp_path, documents=False)
    note = evalsets.assign_documents(s, {tmp_path / "b1/l1.png": "b1"}, "documents")
    assert s.documents[tmp_path / "b2/l3.png"] == "b2" and "4 of 5 lines" in note
    iv = scoring.Options().interval([1], [10], None)
    assert iv.low is None and "too few" in iv.warning


def test_paired_differences_of_a_sweep_and_their_table(tmp_path):
    worse = dict(PRED, **{"b1/l2.png": "Won je tu", "b3/l5.png": "Wec 1"})
    a, b, c = _score(tmp_path, name="a"), _score(tmp_path, name="b"), _score(tmp_path, pred=worse, name="c")
    diffs = comparison.differences([a, b, c])
    pairs = [(d["a"].split("=")[1][0], d["b"].split("=")[1][0]) for d in diffs]
    assert pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    same, worse_d = diffs[0], diffs[1]
    assert (same["point"], same["interval"]["low"], same["interval"]["high"]) == (0.0, 0.0, 0.0)
    assert worse_d["point"] == pytest.approx(-3 / 52)  # c: ó and "." in l2, "2" in l5
    assert worse_d["interval"]["unit"] == "documents" and worse_d["lines"] == 5
    md = report.markdown([a, b, c], differences=diffs)
    assert "Paired differences" in md and "| +0.00 points | [+0.00, +0.00] | no |" in md
    assert md.count("| -5.77 points |") == 2
    paths = report.write([a, b, c], tmp_path / "sweep", differences=diffs)
    rows = list(csv.reader(paths["differences"].read_text(encoding="utf-8").splitlines()))
    assert rows[0][:6] == ["set", "a", "b", "lines", "unit", "difference"] and len(rows) == 4
    table = list(csv.reader(paths["csv"].read_text(encoding="utf-8").splitlines()))
    assert "cer_low" in table[0] and "cer_sorbian" in table[0] and "cer_odd_high" in table[0]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_comparison_metric_names_are_accepted_by_mlflow_for_any_run_name(tmp_path):
    from mlflow.utils.validation import _validate_metric_name

    a, b = _score(tmp_path, name="a"), _score(tmp_path, name="b")
    b["model"] = a["model"].replace(",", ";")  # differs from a's only in a character MLflow refuses
    a.pop("model_dir", None), b.pop("model_dir", None)
    metrics = comparison.comparison_metrics([a, b], comparison.differences([a, b]))
    for name in metrics:
        _validate_metric_name(name)
    per_model = [k for k in metrics if k.endswith("/eval/val/cer")]
    assert len(per_model) == 2  # no clash swallowed one of them
    assert any(k.startswith("diff/val/") for k in metrics)
    assert scoring.metric_name("a=b,c/../d//e") == "a_b_c/__/d/e"


def _sweep(tmp: Path, uri: str) -> tuple[Path, OmegaConf]:
    sweep = tmp / "sweep"
    for i, name in enumerate(("a", "b")):
        job = sweep / str(i)
        r = _score(tmp, name=f"s{name}")
        r.pop(comparison.JOB_DIR)
        r["mlflow"] = {"tracking_uri": uri}
        (job / "val").mkdir(parents=True)
        (job / "val" / "lines.tsv").write_text(
            (tmp / f"s{name}" / "val" / "lines.tsv").read_text(encoding="utf-8"), encoding="utf-8"
        )
        (job / scoring.RESULT_FILE).write_text(json.dumps(r), encoding="utf-8")
    cfg = OmegaConf.create(
        {"dry_run": False, "hydra": {"sweep": {"dir": str(sweep)}}, "eval": {"comparison_experiment": "cmp"}}
    )
    return sweep, cfg


def test_the_comparison_is_logged_finished_with_differences(tmp_path, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    sweep, cfg = _sweep(tmp_path, uri)
    comparison.ComparisonTable().on_multirun_end(cfg)
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("cmp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert any(k.startswith("diff/val/") for k in runs[0].data.metrics)
    assert (sweep / "cer-table-differences.csv").is_file()


def test_an_mlflow_failure_of_the_comparison_is_an_error_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    sweep, cfg = _sweep(tmp_path, f"sqlite:///{blocker}/mlruns.db")
    with pytest.raises(SystemExit) as exc:
        comparison.ComparisonTable().on_multirun_end(cfg)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "hsbcala: error: mlflow.tracking_uri=" in err and "could not log the comparison" in err
    assert (sweep / "cer-table.md").is_file()  # the table on disk is whole


def test_intervals_text_and_missing_rows_in_the_table():
    ok = {
        "model": "m",
        "sets": [
            {
                "name": "val",
                "overall": {
                    "lines": 3,
                    "cer": 0.1,
                    "interval": {"low": None, "high": None, "warning": "1 document: too few"},
                },
                "groups": {},
            }
        ],
    }
    bad = {"model": "x", "sets": [], "groups": {}, "error": "model_dir y holds no trained model"}
    md = report.markdown([ok, bad])
    assert "| m | 3 | 10.00 % [n/a] |" in md and "interval: 1 document: too few" in md
    assert "| x | missing | missing |" in md
    assert intervals.Interval(0.1, None, None, "lines", 1, 10, 0.95, 0).text() == "n/a"


def test_the_interval_note_names_what_was_resampled():
    def result(unit: str, note: str) -> dict:
        iv = {"low": 0.01, "high": 0.02, "unit": unit}
        return {"intervals": {"level": 0.95, "resamples": 1000, "seed": 0},
                "sets": [{"name": "val", "interval_unit": note, "overall": {"cer": 0.015, "interval": iv}}]}  # fmt: skip

    one_doc = result("documents", "1 document (manifest.json)")
    assert "(1000 resamples of documents, seed 0)" in report.interval_note([one_doc])
    both = report.interval_note([one_doc, result("lines", "lines")])
    assert "(1000 resamples of documents / lines, seed 0)" in both
    assert report.interval_note([{"sets": []}]) == ""


def test_baseline_is_the_warm_start_copy_else_the_recorded_model_else_missing_with_the_reason(tmp_path):
    from hsbcala import engines
    from hsbcala.evaluate import baseline

    engine = engines.get("cala1")
    md = tmp_path / "model"
    md.mkdir()
    ckpt, why = baseline.find(md, engine)
    assert ckpt is None and "records no warm start" in why and "trained from scratch" in why
    gone = tmp_path / "pretrained" / "fraktur_19th_century" / "0.ckpt.json"
    (md / "codec-report.json").write_text(json.dumps({"model": str(gone)}), encoding="utf-8")
    ckpt, why = baseline.find(md, engine)
    assert ckpt is None and "the warm-start model is gone" in why and f"{gone} (recorded" in why
    assert baseline.find(None, engine)[0] is None


def test_bad_eval_settings_are_refused_with_one_line():
    from hsbcala.core.errors import ConfigError
    from hsbcala.evaluate import run as evaluate
    from tests.test_evaluate import compose_eval

    for version in ("cala1", "cala2"):  # every checkpoint of either version can be scored
        evaluate.check(compose_eval([f"version={version}", "eval.checkpoints=all", "eval.data=[x/*.png]"]))
    with pytest.raises(ConfigError, match="eval.intervals.level must be between 0 and 1"):
        evaluate.check(compose_eval(["eval.intervals.level=1.5", "eval.data=[x/*.png]"]))
    with pytest.raises(ConfigError, match="eval.sorbian_letters: ' ' is not one character"):
        evaluate.check(compose_eval(["eval.sorbian_letters='ě č'", "eval.data=[x/*.png]"]))


def test_finetune_sentence_says_by_how_much_and_flags_a_worse_model(tmp_path):
    from hsbcala.evaluate import baseline

    a = _score(tmp_path, name="tuned")
    worse = dict(PRED, **{"b1/l2.png": "Won je tu"})
    b = _score(tmp_path, pred=worse, name="base")
    lines = [scoring.read_lines(Path(r[comparison.JOB_DIR]) / "val" / scoring.LINES_FILE) for r in (a, b)]
    settings = {"resamples": 200, "level": 0.95, "seed": 0}
    better = comparison.paired(
        *lines, set_name="val", a="m", b="m baseline", by_documents=False, settings=settings
    )
    text = baseline.finetune_sentence(better)
    assert text.startswith("fine-tuning changed CER on 'val' by -3.85 points [") and "WORSE" not in text
    worse_d = comparison.paired(
        *reversed(lines), set_name="val", a="m", b="m baseline", by_documents=False, settings=settings
    )
    assert "+3.85 points" in baseline.finetune_sentence(
        worse_d
    ) and "WORSE than the baseline" in baseline.finetune_sentence(worse_d)
