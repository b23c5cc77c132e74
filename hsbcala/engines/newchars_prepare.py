"""Append characters to a Calamari model's codec, each output row a copy of a base character's (engine side).

Run by the Python of the model's own engine environment (hsbcala is not installed there; this file imports only
what that environment has: numpy, h5py, and for Calamari 2 SavedModels TensorFlow and calamari_ocr)::

    python newchars_prepare.py '{"version": 2, "model": "/m/warmstart/0.ckpt.json", "add": [["ě", "e"]]}'
    python newchars_prepare.py --dump /m/warmstart/0.ckpt.json OUT.npz     # every weight, for the tests

The model (its ``.ckpt.json`` and weights) is rewritten IN PLACE: the launcher runs this on its fresh copy in
``<model_dir>/warmstart.part/``. Layout of the output ("logits") layer in both versions: a Dense layer with one
unit per codec entry, the codec's index 0 being the CTC blank, whose unit is the LAST one (Calamari 1
``tensorflow_model.py``: "tensorflow ctc loss expects last label as blank"; Calamari 2 ``graph.py`` rolls the
blank-last logits by one). So the character at codec index i has unit i - 1, and characters appended to the
codec get units inserted just before the blank's: exactly where Calamari's own warm start puts its appends
(``copy_weights_from_model``: ``W[:, :-1], new, W[:, -1:]``).

Weights: Calamari 1 and Calamari 2 up to checkpoint version 5: a Keras ``.ckpt.h5`` (rewritten with h5py: every
``logits`` kernel/bias dataset, optimizer slots included, and the Keras ``model_config`` units); Calamari 2.3
(version 6): a SavedModel directory ``.ckpt/``, rebuilt with Calamari's own model code as its 5→6 migration
does (``calamari_ocr/ocr/savedmodel/migrations/version5to6.py``) and the loaded weights assigned to it.
Prints one JSON line with what it did.
"""

import json
import os
import shutil
import sys

import numpy as np


def _codec_keys(d):
    """(the dict holding 'charset', the dict holding 'classes') of a model JSON of either version."""
    if "scenario" in d:  # Calamari 2.1+ (versions 4-6)
        return d["scenario"]["data"]["codec"], d["scenario"]["model"]
    if "model" in d and "network" in d["model"]:  # Calamari 1
        return d["model"]["codec"], d["model"]["network"]
    raise SystemExit("unsupported model JSON (Calamari 2.0 models: let Calamari 2.3 upgrade them first)")


def _expand(a, units):
    """``a`` (last axis = output units, blank last) with the units ``units`` appended before the blank."""
    return np.concatenate([a[..., :-1], a[..., units], a[..., -1:]], axis=-1)


def _h5(path, n, units):
    import h5py

    done = []
    with h5py.File(path, "r+") as f:
        found = []

        def visit(name, obj):
            base = name.rsplit("/", 1)[-1]
            if (
                isinstance(obj, h5py.Dataset)
                and "logits" in name
                and base.split(":")[0] in ("kernel", "bias")
                and obj.shape
                and obj.shape[-1] == n
            ):
                found.append(name)

        f.visititems(visit)
        if not any("optimizer" not in x and x.endswith(("kernel:0", "kernel")) for x in found):
            raise SystemExit(f"{path}: no logits kernel with {n} units found")
        for name in found:
            ds = f[name]
            data, attrs = ds[()], dict(ds.attrs)
            del f[name]
            new = f.create_dataset(name, data=_expand(data, units).astype(data.dtype))
            for k, v in attrs.items():
                new.attrs[k] = v
            done.append(name)
        if "model_config" in f.attrs:  # a whole-model save (Calamari 1): the Dense layer's units
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            for layer in config.get("config", {}).get("layers", []):
                if layer.get("name") == "logits" and layer.get("config", {}).get("units") == n:
                    layer["config"]["units"] = n + len(units)
            f.attrs["model_config"] = json.dumps(config).encode()
    return done


def _savedmodel(ckpt_dir, d, n, units):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from calamari_ocr.ocr.scenario import CalamariScenario
    from calamari_ocr.ocr.training.params import TrainerParams
    from tensorflow import keras

    custom = CalamariScenario.model_cls().all_custom_objects()
    src = keras.models.load_model(ckpt_dir, custom_objects=custom, compile=False)
    weights = [np.asarray(w) for w in src.weights if w.name not in ("print_limit:0", "count:0")]
    keras.backend.clear_session()
    scenario = CalamariScenario(TrainerParams.from_dict(d).scenario)
    inputs = scenario.data.create_input_layers()
    model = keras.models.Model(inputs, scenario.graph.predict(inputs))
    targets = [w for w in model.weights if w.name not in ("print_limit:0", "count:0")]
    if len(targets) != len(weights):
        raise SystemExit(f"{ckpt_dir}: {len(weights)} weights loaded, the rebuilt model has {len(targets)}")
    done = []
    for t, w in zip(targets, weights):
        if "logits" in t.name:
            w = _expand(w, units)
            done.append(t.name)
        if tuple(t.shape) != w.shape:
            raise SystemExit(f"{ckpt_dir}: weight {t.name} has shape {w.shape}, the rebuilt model {t.shape}")
        t.assign(w)
    if len(done) != 2:
        raise SystemExit(f"{ckpt_dir}: expected a logits kernel and bias, found {done}")
    tmp = ckpt_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, include_optimizer=False)
    shutil.rmtree(ckpt_dir)
    os.rename(tmp, ckpt_dir)
    return done


def prepare(spec):
    path = spec["model"]
    with open(path, encoding="utf-8") as fh:
        d = json.load(fh)
    codec, _ = _codec_keys(d)
    charset = list(codec["charset"])
    if not charset or charset[0] != "":
        raise SystemExit(f"{path}: codec without the CTC blank at index 0")
    n = len(charset)
    units, added = [], []
    for char, base in spec["add"]:
        if char in charset:
            raise SystemExit(f"{path}: {char!r} is already in the model's codec")
        if base not in charset:
            raise SystemExit(f"{path}: base {base!r} of {char!r} is not in the model's codec")
        units.append(charset.index(base) - 1)  # the blank (index 0) is the last unit
        added.append(char)
    if not added:
        return {"added": [], "codec_size": n - 1}
    ckpt = path[: -len(".json")]
    d_new = json.loads(json.dumps(d))
    codec_new, net_new = _codec_keys(d_new)
    codec_new["charset"] = charset + added
    if "classes" in net_new or "scenario" in d_new:
        net_new["classes"] = n + len(added)
    if os.path.isfile(ckpt + ".h5"):
        done, kind = _h5(ckpt + ".h5", n, units), "h5"
    elif os.path.isdir(ckpt):
        done, kind = _savedmodel(ckpt, d_new, n, units), "savedmodel"
    else:
        raise SystemExit(f"{path}: no weights ({ckpt}.h5 or {ckpt}/)")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(d_new, fh, ensure_ascii=False, indent=2)
    os.replace(tmp, path)
    return {
        "added": added,
        "units": units,
        "codec_size": n - 1 + len(added),
        "weights": kind,
        "rewritten": done,
    }


def dump(path, out):
    """Every weight of the model as name → array in an .npz (the tests compare models without TensorFlow)."""
    ckpt = path[: -len(".json")]
    arrays = {}
    if os.path.isfile(ckpt + ".h5"):
        import h5py

        with h5py.File(ckpt + ".h5", "r") as f:
            f.visititems(
                lambda name, o: arrays.__setitem__(name, o[()]) if isinstance(o, h5py.Dataset) else None
            )
    else:
        import tensorflow as tf

        reader = tf.train.load_checkpoint(os.path.join(ckpt, "variables", "variables"))
        for name in reader.get_variable_to_shape_map():
            value = reader.get_tensor(name)
            if isinstance(value, np.ndarray) and value.dtype != object:
                arrays[name] = value
    np.savez(out, **{k.replace("/", "|"): v for k, v in arrays.items()})
    print(json.dumps({"dumped": len(arrays)}))


if __name__ == "__main__":
    if sys.argv[1] == "--dump":
        dump(sys.argv[2], sys.argv[3])
    else:
        print(json.dumps(prepare(json.loads(sys.argv[1])), ensure_ascii=True))
