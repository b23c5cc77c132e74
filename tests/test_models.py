"""hsbcala.models: a Calamari model's version, --network and codec from its JSON.

Fast: hand-written JSON shaped like the real files (Calamari 2.3 trainer params, a Calamari 2.1 model
converted from Calamari 1, Calamari 2.0, Calamari 1 protobuf JSON). Slow: a tiny real model per Calamari
version, whose derived network must warm-start a real training (the engine rejects any other network) on
lines with new letters, and whose codec must equal the characters of the training GT.
"""

from __future__ import annotations

import json
import os
import subprocess
import unicodedata
from pathlib import Path

import pytest

from hsbcala.core.errors import DataError
from hsbcala.engines.modeljson import ModelInfo, read_model, weights_arg
from tests.conftest import SHARED

# -------------------------------------------------------------------------------------------- JSON builders

IV = "calamari_ocr.ocr.model.layers.layer:IntVec2D"


def _vec(x: int, y: int) -> dict:
    return {"x": x, "y": y, "__cls__": IV}


def conv(filters: int, k=(3, 3), s=(1, 1), activation="relu") -> dict:
    return {
        "name": None,
        "filters": filters,
        "kernel_size": _vec(*k),
        "strides": _vec(*s),
        "padding": "same",
        "activation": activation,
        "__cls__": "calamari_ocr.ocr.model.layers.conv2d:Conv2DLayerParams",
    }


def pool(p=(2, 2), s=(-1, -1)) -> dict:
    return {
        "name": None,
        "pool_size": _vec(*p),
        "strides": _vec(*s),
        "padding": "same",
        "__cls__": "calamari_ocr.ocr.model.layers.pool2d:MaxPool2DLayerParams",
    }


def lstm(n: int, merge="concat") -> dict:
    return {
        "name": None,
        "hidden_nodes": n,
        "merge_mode": merge,
        "__cls__": "calamari_ocr.ocr.model.layers.bilstm:BiLSTMLayerParams",
    }


def dropout(rate: float) -> dict:
    return {"name": None, "rate": rate, "__cls__": "calamari_ocr.ocr.model.layers.dropout:DropoutLayerParams"}


def named(layers: list[dict]) -> list[dict]:
    """Layer names as ModelParams.__post_init__ gives them (conv2d_0, maxpool2d_0, …)."""
    counts: dict[str, int] = {}
    prefix = {
        "Conv2DLayerParams": "conv2d",
        "MaxPool2DLayerParams": "maxpool2d",
        "BiLSTMLayerParams": "lstm",
        "DropoutLayerParams": "dropout",
    }
    out = []
    for layer in layers:
        p = prefix[layer["__cls__"].rsplit(":", 1)[1]]
        counts[p] = counts.get(p, -1) + 1
        out.append({**layer, "name": f"{p}_{counts[p]}"})
    return out


def v2_trainer_params(layers: list[dict], charset: list[str], network: str | None = None, version=6) -> dict:
    """Shaped like Calamari 2.3's best.ckpt.json and checkpoint_NNNN/trainer_params.json (relevant parts)."""
    return {
        "epochs": 2,
        "current_epoch": 2,
        "output_dir": "/somewhere/else",
        "scenario": {
            "model": {
                "layers": named(layers),
                "classes": len(charset),
                "ctc_merge_repeated": True,
                "__cls__": "calamari_ocr.ocr.model.params:ModelParams",
            },
            "data": {
                "line_height": 48,
                "codec": {"charset": charset, "__cls__": "calamari_ocr.ocr.dataset.codec:Codec"},
                "__cls__": "calamari_ocr.ocr.dataset.params:DataParams",
            },
            "__cls__": "calamari_ocr.ocr.scenario_params:CalamariScenarioParams",
        },
        "version": version,
        "codec": {
            "keep_loaded": True,
            "resolved_include_chars": ["X", "Y"],  # not the codec!
            "__cls__": "calamari_ocr.ocr.dataset.codec:CodecConstructionParams",
        },
        "best_model_prefix": "best",
        "network": network,
        "__cls__": "calamari_ocr.ocr.training.params:TrainerParams",
    }


def v1_checkpoint(layers: list[dict], charset: list[str], dropout_rate=None, version=2) -> dict:
    """Shaped like a Calamari 1.0.7 best.ckpt.json (protobuf JSON: camelCase, defaults left out)."""
    network = {
        "layers": layers,
        "solver": "ADAM_SOLVER",
        "features": 48,
        "classes": len(charset),
        "backend": {"cudnn": True, "shuffleBufferSize": 1000},
        "ctcMergeRepeated": True,
        "learningRate": 0.001,
    }
    if dropout_rate is not None:
        network["dropout"] = dropout_rate
    d = {
        "model": {
            "network": network,
            "lineHeight": 48,
            "dataPreprocessor": {"lineHeight": 48, "pad": 16},
            "codec": {"charset": charset},
        },
        "processes": 1,
        "batchSize": 8,
        "iter": 39,
        "outputModelPrefix": "model_",
    }
    if version is not None:
        d["version"] = version
    return d


V1_DEFAULT_LAYERS = [
    {"filters": 40, "kernelSize": {"x": 3, "y": 3}, "stride": {"x": 1, "y": 1}},
    {"type": "MAX_POOLING", "kernelSize": {"x": 2, "y": 2}, "stride": {"x": 2, "y": 2}},
    {"filters": 60, "kernelSize": {"x": 3, "y": 3}, "stride": {"x": 1, "y": 1}},
    {"type": "MAX_POOLING", "kernelSize": {"x": 2, "y": 2}, "stride": {"x": 2, "y": 2}},
    {"type": "LSTM", "hiddenNodes": 200},
]
DEFAULT_NET = "cnn=40:3x3,pool=2x2,cnn=60:3x3,pool=2x2,lstm=200,dropout=0.5"
DEEP3 = [conv(40), pool(), conv(60), pool(), conv(120), lstm(200), lstm(200), lstm(200), dropout(0.5)]
CHARSET = ["", " ", "a", "b", "ſ", "⸗", "ě"]


def write(tmp_path: Path, d, name="best.ckpt.json") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(d, indent=2), encoding="utf-8")
    return p


def data_error(fn, *args) -> str:
    with pytest.raises(DataError) as exc:
        fn(*args)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------------------------- Calamari 2


def test_v2_tiny_model(tmp_path):
    p = write(tmp_path, v2_trainer_params([conv(8), pool(), lstm(16)], CHARSET, "cnn=8:3x3,pool=2x2,lstm=16"))
    info = read_model(p)
    assert info == ModelInfo(
        path=p, version=2, network="cnn=8:3x3,pool=2x2,lstm=16", charset=(" ", "a", "b", "ſ", "⸗", "ě")
    )


def test_v2_deep3_is_named(tmp_path):
    p = write(tmp_path, v2_trainer_params(DEEP3, CHARSET, "deep3", version=5))  # calamari_models_experimental
    assert read_model(p).network == "deep3"


def test_v2_deep3_like_network_is_spelled_out(tmp_path):
    layers = [
        conv(32, (3, 3)),
        pool((2, 2)),
        conv(64, (3, 5), (1, 2)),
        pool((2, 1), (1, 1)),
        conv(128),
        lstm(256),
        lstm(128),
        dropout(0.30000001192092896),
        lstm(64),
        dropout(0.25),
    ]
    p = write(tmp_path, v2_trainer_params(layers, CHARSET, "/home/someone/net.json"))
    assert read_model(p).network == (
        "cnn=32:3x3,pool=2x2,cnn=64:3x5:1x2,pool=2x1:1x1,cnn=128:3x3,"
        "lstm=256,lstm=128,dropout=0.3,lstm=64,dropout=0.25"
    )


def test_v2_pool_strides_equal_to_the_pool_size_are_the_default(tmp_path):
    p = write(
        tmp_path, v2_trainer_params([conv(8), pool((2, 2), (2, 2)), pool((3, 1), (-1, 1)), lstm(16)], CHARSET)
    )
    assert read_model(p).network == "cnn=8:3x3,pool=2x2,pool=3x1,lstm=16"


def test_v2_model_converted_from_calamari1(tmp_path):
    """calamari_models (fraktur_19th_century …) for Calamari 2: only 'scenario' and 'version' 5."""
    d = v2_trainer_params([conv(40), pool(), conv(60), pool(), lstm(200), dropout(0.5)], CHARSET, version=5)
    d = {"scenario": d["scenario"], "version": 5}
    info = read_model(write(tmp_path, d, "0.ckpt.json"))
    assert (info.version, info.network) == (2, DEFAULT_NET)


def test_v2_htr_plus_is_named_and_leaky_relu_elsewhere_fails(tmp_path):
    la = "leaky_relu"
    htr = [
        conv(8, (2, 4), (2, 4), la),
        conv(32, (2, 4), activation=la),
        pool((2, 4), (2, 4)),
        conv(64, activation=la),
        pool((2, 1), (2, 1)),
        lstm(256, "sum"),
        dropout(0.5),
        lstm(256, "sum"),
        dropout(0.5),
        lstm(256, "sum"),
        dropout(0.5),
    ]
    assert read_model(write(tmp_path, v2_trainer_params(htr, CHARSET), "a.ckpt.json")).network == "htr+"
    odd = write(
        tmp_path, v2_trainer_params([conv(8, activation=la), pool(), lstm(16)], CHARSET), "b.ckpt.json"
    )
    msg = data_error(read_model, odd)
    assert str(odd) in msg and "leaky_relu" in msg and "--network" in msg


def test_v2_calamari20_checkpoint(tmp_path):
    """Checkpoint version 3 (Calamari 2.0): scenario_params.model_params, typed layers, a dropout rate."""

    def typed(kind, **kw):
        base = {
            "type": kind,
            "filters": 0,
            "kernel_size": {"x": 0, "y": 0},
            "stride": {"x": 0, "y": 0},
            "hidden_nodes": 0,
            "peepholes": False,
            "lstm_direction": "bidirectional",
            "dilated_depth": 0,
            "concat_indices": [],
        }
        return {**base, **kw}

    layers = [
        typed("convolutional", filters=40, kernel_size={"x": 3, "y": 3}, stride={"x": 1, "y": 1}),
        typed("max_pooling", kernel_size={"x": 2, "y": 2}, stride={"x": 2, "y": 2}),
        typed("lstm", hidden_nodes=200),
    ]
    d = {
        "scenario_params": {
            "model_params": {"layers": layers, "dropout": 0.5, "classes": 4},
            "data_params": {"codec": {"charset": ["", "a", "b", "c"]}},
        },
        "version": 3,
    }
    p = write(tmp_path, d)
    assert read_model(p) == ModelInfo(p, 2, "cnn=40:3x3,pool=2x2,lstm=200,dropout=0.5", ("a", "b", "c"))


def test_v2_newer_checkpoint_version_fails(tmp_path):
    p = write(tmp_path, v2_trainer_params(DEEP3, CHARSET, version=7))
    assert "version 7" in data_error(read_model, p)


# ----------------------------------------------------------------------------------------------- Calamari 1


def test_v1_default_network(tmp_path):
    """fraktur_19th_century, antiqua_historical (calamari_models, Calamari 1): the default network."""
    p = write(
        tmp_path, v1_checkpoint(V1_DEFAULT_LAYERS, ["", " ", "a", "\n", "ſ"], dropout_rate=0.5), "0.ckpt.json"
    )
    assert read_model(p) == ModelInfo(p, 1, DEFAULT_NET, (" ", "a", "\n", "ſ"))


def test_v1_tiny_model_without_dropout_and_float32_rates(tmp_path):
    layers = [
        {"filters": 8, "kernelSize": {"x": 3, "y": 5}, "stride": {"x": 1, "y": 1}},
        {"type": "MAX_POOLING", "kernelSize": {"x": 2, "y": 1}, "stride": {"x": 1, "y": 1}},
        {"type": "LSTM", "hiddenNodes": 16},
        {"type": "LSTM", "hiddenNodes": 16},
    ]
    assert read_model(write(tmp_path, v1_checkpoint(layers, CHARSET), "a.ckpt.json")).network == (
        "cnn=8:3x5,pool=2x1:1x1,lstm=16,lstm=16"
    )
    p = write(
        tmp_path,
        v1_checkpoint(layers[:1] + layers[2:3], CHARSET, dropout_rate=0.30000001192092896),
        "b.ckpt.json",
    )
    assert read_model(p).network == "cnn=8:3x5,lstm=16,dropout=0.3"


def test_v1_snake_case_and_enum_numbers_are_protobuf_too(tmp_path):
    layers = [
        {"type": 0, "filters": 8, "kernel_size": {"x": 3, "y": 3}},
        {"type": 1, "kernel_size": {"x": 2, "y": 2}, "stride": {"x": 2, "y": 2}},
        {"type": 2, "hidden_nodes": 16},
    ]
    assert read_model(write(tmp_path, v1_checkpoint(layers, CHARSET))).network == "cnn=8:3x3,pool=2x2,lstm=16"


def test_v1_calamari0_model_fails_clearly(tmp_path):
    p = write(tmp_path, v1_checkpoint(V1_DEFAULT_LAYERS, CHARSET, 0.5, version=None), "0.ckpt.json")
    msg = data_error(read_model, p)
    assert str(p) in msg and "Calamari 0.x" in msg


# --------------------------------------------------------------------------------------------------- errors


def test_path_without_json_suffix(tmp_path):
    p = write(tmp_path, v1_checkpoint(V1_DEFAULT_LAYERS, CHARSET, 0.5), "model_00000040.ckpt.json")
    assert read_model(tmp_path / "model_00000040.ckpt").path == p


def test_missing_model_names_the_expected_path(tmp_path):
    msg = data_error(read_model, tmp_path / "pretrained" / "deep3_fraktur19" / "0.ckpt")
    assert f"expected {tmp_path / 'pretrained' / 'deep3_fraktur19' / '0.ckpt.json'}" in msg


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a Calamari model"),
        ('{"foo": 1}', "not a Calamari model"),
        ('{"scenario": {"model": {"layers": []}}, "version": 6}', "no layers"),
        ('{"scenario": {"model": {"layers": [{"filters": 3}]}}, "version": 6}', "__cls__"),
        (json.dumps({"scenario": {"model": {"layers": [conv(8)]}}, "version": 6}), "scenario.data"),
        (json.dumps({"model": {"network": {"layers": V1_DEFAULT_LAYERS}}, "version": 2}), "model.codec"),
        (
            json.dumps(
                {
                    "model": {"network": {"layers": [{"type": "FANCY"}]}, "codec": {"charset": []}},
                    "version": 2,
                }
            ),
            "FANCY",
        ),
    ],
)
def test_broken_models_fail_with_one_line_naming_the_file(tmp_path, content, words):
    p = tmp_path / "best.ckpt.json"
    p.write_text(content, encoding="utf-8")
    msg = data_error(read_model, p)
    assert str(p) in msg and words in msg


# ---------------------------------------------------------------------------------------------- weights_arg


def test_weights_arg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {}, "m2/best.ckpt.json")
    (tmp_path / "m2" / "best.ckpt").mkdir()  # Calamari 2.3: a SavedModel directory
    write(tmp_path, {}, "m1/best.ckpt.json")
    (tmp_path / "m1" / "best.ckpt.h5").write_bytes(b"")
    assert weights_arg(Path("m2/best.ckpt.json"), 2) == str(tmp_path / "m2" / "best.ckpt.json")
    assert weights_arg(Path("m2/best.ckpt"), 2) == str(tmp_path / "m2" / "best.ckpt.json")
    assert weights_arg(Path("m1/best.ckpt.json"), 1) == str(tmp_path / "m1" / "best.ckpt")

    assert "best.ckpt.h5" in data_error(weights_arg, Path("m2/best.ckpt.json"), 1)
    assert f"expected {tmp_path / 'm3' / '0.ckpt.json'}" in data_error(weights_arg, Path("m3/0.ckpt"), 2)
    write(tmp_path, {}, "m2/checkpoint/checkpoint_0002/trainer_params.json")
    assert "resuming" in data_error(weights_arg, Path("m2/checkpoint/checkpoint_0002/trainer_params.json"), 2)


# -------------------------------------------------------------------------------------- real engines (slow)


def engine(version: int) -> Path:
    """calamari-train of the project's own engine environment of that version (built on first use)."""
    from hsbcala.engines import envs
    from tests.conftest import ROOT, compose_cfg

    cfg = compose_cfg([f"version=cala{version}"])
    env = envs.resolve(cfg, ROOT)
    env.ensure()
    return Path(env.program("calamari-train"))


BOOKS = SHARED / "data" / "fraktur19-lines" / "ref_AS"
# Characters that both engines' default text processing leaves alone (Calamari 1 turns quotes and dashes into
# ASCII look-alikes, so lines with those are left out and the codec must be exactly the GT's characters).
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?()-äöüÄÖÜßſ⸗")
NET = {
    1: "cnn=8:3x3,pool=2x2,cnn=8:3x3,pool=1x2,lstm=16,dropout=0.3",
    2: "cnn=8:3x3,pool=2x2,cnn=8:3x3,pool=1x2:1x2,lstm=16,dropout=0.3",
}
EXPECTED_NET = {
    1: "cnn=8:3x3,pool=2x2,cnn=8:3x3,pool=1x2,lstm=16,dropout=0.3",
    2: "cnn=8:3x3,pool=2x2,cnn=8:3x3,pool=1x2,lstm=16,dropout=0.3",
}
SORBIAN = "ěčřł"


def _gt(png: Path) -> str:
    return unicodedata.normalize(
        "NFC", png.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8").strip()
    )


def _link_lines(dst: Path, pngs: list[Path]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for png in pngs:
        (dst / png.name).symlink_to(png)
        (dst / f"{png.stem}.gt.txt").symlink_to(png.with_name(f"{png.stem}.gt.txt"))


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def _train(version: int, out: Path, train: str, val: str, network: str, warm: str | None = None):
    exe = str(engine(version))
    if version == 2:
        cmd = [
            exe,
            "--trainer.output_dir",
            str(out),
            "--train.images",
            train,
            "--val.images",
            val,
            "--trainer.epochs",
            "1" if warm else "2",
            "--trainer.samples_per_epoch",
            "16" if warm else "64",
            "--train.batch_size",
            "8",
            "--network",
            network,
            "--train.num_processes",
            "1",
            "--trainer.progress_bar_mode",
            "2",
            "--trainer.export_best",
            "True",
        ]
        cmd += ["--warmstart.model", warm, "--codec.keep_loaded", "False"] if warm else []
    else:
        cmd = [
            exe,
            "--output_dir",
            str(out),
            "--files",
            train,
            "--validation",
            val,
            "--max_iters",
            "10" if warm else "40",
            "--batch_size",
            "8",
            "--early_stopping_frequency",
            "10" if warm else "20",
            "--checkpoint_frequency",
            "10" if warm else "20",
            "--network",
            network,
            "--num_threads",
            "1",
            "--no_progress_bars",
        ]
        cmd += ["--weights", warm] if warm else []
    return _run(cmd, out.parent)


@pytest.mark.slow
def test_real_model_version_network_charset(tiny_model, lines):
    version, path = tiny_model
    info = read_model(path)
    assert (info.version, info.network) == (version, EXPECTED_NET[version])
    assert len(set(info.charset)) == len(info.charset)
    assert set(info.charset) == lines["chars"]


@pytest.mark.slow
def test_real_checkpoints_read_the_same(tiny_model):
    version, path = tiny_model
    best = read_model(path)
    others = (
        sorted(path.parent.glob("checkpoint/checkpoint_*/trainer_params.json"))
        if version == 2
        else sorted(path.parent.glob("model_*.ckpt.json"))
    )
    assert others
    for other in others:
        info = read_model(other)
        assert (info.version, info.network, info.charset) == (best.version, best.network, best.charset)


@pytest.mark.slow
def test_real_warm_start_with_the_derived_network_grows_the_codec(tiny_model, lines):
    version, path = tiny_model
    info = read_model(path)
    root = lines["root"]
    out = root / f"warm{version}"
    proc = _train(
        version,
        out,
        f"{root}/sorbian/*.png",
        f"{root}/val/*.png",
        info.network,
        warm=weights_arg(info.path, version),
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Codec changes: " in log
    warm = read_model(out / "best.ckpt.json")
    assert warm.network == info.network
    assert set(SORBIAN) <= set(warm.charset)
    assert not set(SORBIAN) & set(info.charset)
