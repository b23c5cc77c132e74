"""train.new_chars_init: new characters' output rows copied from their base letters (hsbcala/train/newchars.py).

Fast: the mapping (decomposition, table, no base), the bad inputs (one line, exit 2, before anything starts),
the codec report's record. Slow: per Calamari version, the tiny German model of tests/test_models.py stands in
for the pretrained one; one short launcher training warm-starts from it with ``base`` on lines with ě č ř ł.
Its prepared copy (``<model_dir>/warmstart/``) must hold the new characters in its own codec with rows equal to
their base rows and every other weight unchanged, predict the same text as the original on German lines, and
the engine must have appended nothing ("0 appends": no random rows).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hsbcala.core.errors import ConfigError
from hsbcala.data import codec
from hsbcala.train import newchars
from tests.conftest import ROOT, compose_cfg, run_inprocess
from tests.test_models import SORBIAN, engine, v1_checkpoint

# ------------------------------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(
    ("char", "base"),
    [
        ("ě", "e"),
        ("Č", "C"),
        ("ń", "n"),
        ("ó", "o"),
        ("ǘ", "u"),
        ("ź", "z"),
        ("Ř", "R"),
        ("ł", None),
        ("ß", None),
    ],
)
def test_decomposition_base(char, base):
    assert newchars.decomposition_base(char) == base


def test_decomposition_base_of_marks_and_plain_letters():
    assert newchars.decomposition_base("\u030c") is None  # a combining caron alone
    assert newchars.decomposition_base("e") is None
    assert newchars.decomposition_base("e\u030c") == "e"  # NFD input decomposes the same way


MODEL = tuple("abcdefghijklmnopqrstuvwxyzLCRZ .,")
TABLE = ["ł=l", "Ł=L"]


def test_origins_table_then_decomposition_then_random():
    found = newchars.origins(["ě", "ł", "Ł", "Č", "ß", "Ǆ"], MODEL, TABLE)
    got = {o.char: (o.base, o.how) for o in found}
    assert got == {
        "ě": ("e", "decomposition"),
        "ł": ("l", "table"),
        "Ł": ("L", "table"),
        "Č": ("C", "decomposition"),
        "ß": (None, "no base"),
        "Ǆ": (None, "no base"),  # DŽ decomposes to D + Ž: not one base letter and marks
    }
    assert [o.char for o in found] == ["ě", "ł", "Ł", "Č", "ß", "Ǆ"]  # the codec report's order kept
    assert "random" in found[4].describe() and "no base" in found[4].describe()
    assert found[0].describe() == "copy of e (Unicode decomposition)"


def test_table_wins_over_decomposition_and_base_missing_from_model_stays_random():
    found = newchars.origins(["ě", "Ŕ"], MODEL, ["ě=i"])
    assert [(o.base, o.how) for o in found] == [("i", "table"), ("R", "decomposition")]
    found = newchars.origins(["Ŕ"], ("a",), [])
    assert found[0].base is None


def test_random_mode_names_every_new_character_random():
    found = newchars.origins(["ě", "ł"], MODEL, TABLE, mode="random")
    assert [(o.base, o.how) for o in found] == [(None, "random"), (None, "random")]


def test_table_base_not_in_the_model_is_one_clear_line():
    with pytest.raises(ConfigError) as exc:
        newchars.origins(["ł"], ("a", "b"), TABLE)
    msg = str(exc.value)
    assert "\n" not in msg and "train.new_chars_table" in msg and "'l'" in msg and "not in the" in msg
    # an entry for a character the data does not bring is not used, hence not checked against the model
    assert newchars.origins(["ě"], MODEL, ["ł=Q"])[0].base == "e"


@pytest.mark.parametrize("entry", ["ł=lx", "ll=l", "ł="])
def test_multi_character_mapping_is_one_clear_line(entry):
    with pytest.raises(ConfigError) as exc:
        newchars.check_table([entry])
    assert "\n" not in str(exc.value) and "one character to one base character" in str(exc.value)


@pytest.mark.parametrize("entry", ["ł", "=", "łl", 5])
def test_entry_without_equals_is_one_clear_line(entry):
    with pytest.raises(ConfigError, match="is not CHARACTER=BASE"):
        newchars.check_table([entry])


def test_table_is_nfc_and_equals_may_be_mapped():
    assert newchars.check_table(["e\u030c=e", "==-"]) == {"ě": "e", "=": "-"}
    assert newchars.check_table({"ł": "l"}) == {"ł": "l"}


# -------------------------------------------------------------------------------------------- bad input


def _train(tmp_path: Path, *overrides: str):
    return run_inprocess(
        "train",
        [
            f"paths.root={tmp_path}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
            "dry_run=true",
            *overrides,
        ],
        ROOT,
    )


def test_base_without_a_warm_start_is_refused(tmp_path):
    r = _train(tmp_path, "train.new_chars_init=base")  # preset=demo: warmstart.model=null
    assert r.returncode == 2, r.stderr
    errors = [x for x in r.stderr.splitlines() if "error" in x]
    assert len(errors) == 1 and "train.new_chars_init=base needs a warm start" in errors[0], r.stderr
    assert not (tmp_path / "models").exists()


def test_multi_character_table_entry_is_refused_on_the_command_line(tmp_path):
    r = _train(tmp_path, "train.new_chars_table=['ł=l','Ł=LL']")
    assert r.returncode == 2, r.stderr
    assert "train.new_chars_table" in r.stderr and "one character to one" in r.stderr


def test_unknown_mode_fails_while_composing(tmp_path):
    r = _train(tmp_path, "train.new_chars_init=copy")
    assert r.returncode == 2 and "new_chars_init" in r.stderr


def test_table_base_missing_from_the_model_fails_in_the_plan(tmp_path):
    """The launcher's own path (trainplan._new_chars) with a real JSON: one ConfigError before anything."""
    from hsbcala import engines
    from hsbcala.engines import envs, modeljson
    from hsbcala.train import plan as trainplan

    model = tmp_path / "m" / "0.ckpt.json"
    model.parent.mkdir()
    layers = [{"filters": 8, "kernelSize": {"x": 3, "y": 3}}, {"type": "LSTM", "hiddenNodes": 16}]
    model.write_text(json.dumps(v1_checkpoint(layers, ["", "a", "e", "l"])), encoding="utf-8")
    cfg = compose_cfg(["version=cala1", f"warmstart.model={model}", "train.new_chars_init=base"])
    report = codec.report(codec.count_chars(["aěłŁ"]), ["a", "e", "l"], model=str(model), model_version=1,
                          policy="recompute")  # fmt: skip
    plan = SimpleNamespace(codec_report=report, manifest={})
    env = envs.resolve(cfg, ROOT)
    info = modeljson.read_model(model)
    checked = newchars.check_config(cfg.train, cfg.warmstart)
    with pytest.raises(ConfigError, match=r"Ł → L: the base letter 'L' is not in"):
        trainplan._new_chars("base", checked, engines.get("cala1"), env, info, plan)
    # without Ł: ě from e, ł from l (table); recorded in the report and the manifest, carried to the copy step
    report = codec.report(codec.count_chars(["aěěłß"]), ["a", "e", "l"], model=str(model), model_version=1,
                          policy="recompute")  # fmt: skip
    plan = SimpleNamespace(codec_report=report, manifest={})
    prep = trainplan._new_chars("base", checked, engines.get("cala1"), env, info, plan)
    assert prep is not None and prep.record["source_model"] == str(model)
    assert plan.manifest["warmstart_new_chars"]["copied"] == {"ě": "e", "ł": "l"}
    assert plan.manifest["warmstart_new_chars"]["random"] == ["ß"]
    table = "\n".join(codec.short_table(report))
    assert "copied 2: ě←e  ł←l" in table and "random (no base in the model's codec): ß" in table
    assert "weights: copy of e (Unicode decomposition)" in codec.full_text(report)
    # random: nothing carried, the report says so
    plan = SimpleNamespace(codec_report=report, manifest={})
    assert trainplan._new_chars("random", checked, engines.get("cala1"), env, info, plan) is None
    assert "warmstart_new_chars" not in plan.manifest
    assert "all new characters start random" in "\n".join(codec.short_table(report))


# ------------------------------------------------------------------------------------ real engines (slow)


def _env_python(version: int) -> str:
    return str(engine(version).with_name("python"))


def _dump(version: int, model_json: Path, out: Path) -> dict[str, np.ndarray]:
    proc = subprocess.run(
        [_env_python(version), str(newchars.PREPARE_SCRIPT), "--dump", str(model_json), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def _predict(version: int, model_json: Path, images: list[Path], out: Path) -> dict[str, str]:
    from hsbcala import engines
    from hsbcala.engines.modeljson import weights_arg

    eng = engines.get(f"cala{version}")
    out.mkdir(parents=True)
    ckpt = weights_arg(model_json, version) if version == 1 else str(model_json)
    files = " ".join(map(str, images))
    argv = eng.predict_argv(str(engine(version).with_name("calamari-predict")), Path(ckpt), files, out, 8)
    # the argv takes one glob or list as a single argument: split the list into the engine's nargs
    i = argv.index(files)
    argv[i : i + 1] = list(map(str, images))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env={
        **__import__("os").environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return {p.name.split(".")[0]: p.read_text(encoding="utf-8") for p in out.glob("*.pred.txt")}


@pytest.fixture(scope="session")
def prepared(tiny_model, lines, tmp_path_factory):
    """One short launcher training per version: warm start from the tiny German model with base, on Sorbian
    lines (ě č ř ł new). Returns (version, original JSON, prepared JSON, model dir, launcher result)."""
    version, original = tiny_model
    root = lines["root"]
    tmp = tmp_path_factory.mktemp(f"newchars{version}")
    model_dir = tmp / "model"
    overrides = [
        f"version=cala{version}",
        f"paths.root={tmp}",
        f"model_dir={model_dir}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
        f"warmstart.model={original}",
        "train.new_chars_init=base",
        f"data.train=[{root}/sorbian/*.png]",
        f"data.val=[{root}/val/*.png]",
        "train.epochs=1",
        "train.iterations=null",
        "train.samples_per_epoch=16",
        "train.batch_size=8",
        "train.workers=1",
        "train.augmentations=0",
        "train.early_stopping_patience=0",
        "data.checks.too_narrow=warn",
    ]
    result = run_inprocess("train", overrides, ROOT)
    result = SimpleNamespace(**vars(result), overrides=overrides)
    return version, original, model_dir / "warmstart" / original.name, model_dir, result


@pytest.mark.slow
def test_prepared_rows_equal_their_base_rows_and_nothing_else_changed(prepared, tmp_path):
    version, original, warm, _, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    from hsbcala.engines.modeljson import read_model

    before, after = read_model(original), read_model(warm)
    added = after.charset[len(before.charset) :]
    assert after.charset[: len(before.charset)] == before.charset  # the model's own codec, then the new ones
    assert set(added) == set(SORBIAN)  # ě č ř by decomposition, ł by the default table
    bases = {"ě": "e", "č": "c", "ř": "r", "ł": "l"}
    old, new = _dump(version, original, tmp_path / "old.npz"), _dump(version, warm, tmp_path / "new.npz")
    assert old.keys() == new.keys()
    n = len(before.charset) + 1  # units: one per character and the CTC blank, which is the last unit
    logits = 0
    for key, a in old.items():
        b = new[key]
        if a.shape == b.shape:
            assert np.array_equal(a, b), f"{key} changed"
            continue
        logits += 1
        assert a.shape[-1] == n and b.shape[-1] == n + len(added), key
        assert np.array_equal(b[..., : n - 1], a[..., : n - 1]), f"{key}: old rows changed"
        assert np.array_equal(b[..., -1], a[..., -1]), f"{key}: the blank changed"
        for j, c in enumerate(added):
            base_unit = before.charset.index(bases[c])  # codec index - 1 (the blank, index 0, is last)
            assert np.array_equal(b[..., n - 1 + j], a[..., base_unit]), (
                f"{key}: {c} is not a copy of {bases[c]}"
            )
    assert logits >= 2  # kernel and bias (Calamari 1's .h5 also holds Adam's slots for them)
    record = json.loads((warm.parent / newchars.RECORD).read_text(encoding="utf-8"))
    assert record["copied"] == bases  # the other new characters of these lines (*, „, O …) have no base
    assert not set(record["random"]) & set(bases) and all(newchars.decomposition_base(c) is None
                                                          for c in record["random"])  # fmt: skip


@pytest.mark.slow
def test_prepared_model_reads_german_lines_as_the_original_does(prepared, lines, tmp_path):
    version, original, warm, _, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    images = sorted((lines["root"] / "val").glob("*.png"))[:6]
    a = _predict(version, original, images, tmp_path / "original")
    b = _predict(version, warm, images, tmp_path / "prepared")
    assert len(a) == len(images) and a == b
    assert any(a.values())  # the tiny model outputs something to compare


@pytest.mark.slow
def test_training_from_the_prepared_model_appends_nothing_random(prepared):
    from hsbcala.engines.modeljson import read_model

    version, _, warm, model_dir, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    log = (model_dir / "engine.log").read_text(encoding="utf-8", errors="replace")
    changes = re.search(r"Codec changes: (\d+) deletions, (\d+) appends", log)
    assert changes, log[-3000:]
    # the engine appends (random rows, at the end of its codec) only new characters without a base (*, „, O …
    # in these lines; Calamari 1 maps „ ” to one ASCII quote first): every prepared letter it found in the
    # model's own codec
    record = json.loads((warm.parent / newchars.RECORD).read_text(encoding="utf-8"))
    appends = int(changes.group(2))
    assert 0 < appends <= len(record["random"]) < len(record["origins"])
    final = read_model(model_dir / "best.ckpt.json").charset
    assert not set(final[len(final) - appends :]) & set(record["copied"]), final
    report = json.loads((model_dir / "codec-report.json").read_text(encoding="utf-8"))
    assert report["new_chars_init"] == "base"
    assert {e["char"]: e["weights"] for e in report["added"]}["ł"] == "copy of l (table)"
    assert json.loads((model_dir / "manifest.json").read_text())["warmstart_new_chars"]["copied"]["ě"] == "e"
    assert "ě←e" in result.stderr  # the console's codec table
    assert read_model(model_dir / "best.ckpt.json").version == version
    assert set(SORBIAN) <= set(read_model(model_dir / "best.ckpt.json").charset)


@pytest.mark.slow
def test_a_resume_does_not_prepare_again(prepared):
    """A relaunch on the model directory resumes from its checkpoint: its plan carries no preparation, and the
    prepared copy stays as it is."""
    from hsbcala.train import plan as trainplan

    _, _, warm, _, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    stamp = warm.stat().st_mtime_ns
    p = trainplan.plan(compose_cfg([*result.overrides, "dry_run=true"]))
    assert p.resume_from is not None
    assert p.warmstart_source is None and p.inputs.warmstart is None
    assert warm.stat().st_mtime_ns == stamp
