"""A Calamari model's version, network and codec, read from its JSON (no TensorFlow, no Calamari).

A warm start only works with the network the pretrained model was trained with: neither engine takes the
layers from the model (Calamari 2.3.1 even logs "Keeping existing network (…)" and then builds the
``--network`` it was given, or its default, and fails on the first weight of another shape). So the launcher
derives ``--network`` from the model file. The codec may change: both engines keep the characters shared
with the model, append new ones at the end and (Calamari 2 with ``--codec.keep_loaded False``, Calamari 1 by
default) drop the ones the new data lacks.

File formats (paths of the keys that matter):

- **Calamari 2** (``version`` 6: 2.3; 5: 2.1–2.2; 4: early 2.x, same layout): ``<name>.ckpt.json``
  (``best.ckpt.json``, ``0.ckpt.json`` …) and ``checkpoint/checkpoint_NNNN/trainer_params.json`` are the
  trainer's parameters: ``version``, ``network`` (the ``--network`` value given at training, or null; not
  used here, the layers are authoritative), ``scenario.model.layers[]`` (each with ``__cls__`` =
  ``calamari_ocr.ocr.model.layers.<module>:<Class>LayerParams`` and its fields, e.g. ``filters``,
  ``kernel_size.{x,y}``, ``strides.{x,y}``, ``pool_size.{x,y}``, ``hidden_nodes``, ``rate``) and
  ``scenario.data.codec.charset`` (index 0 = ``""``, the CTC blank). Models converted from Calamari 1 by
  Calamari 2.1 (``calamari_models`` releases) hold only ``scenario`` and ``version`` 5. Weights:
  ``<name>.ckpt/`` (a SavedModel; version 6) or ``<name>.ckpt.h5`` (version ≤ 5, converted in place by
  Calamari 2.3.1 on load, which needs a writable directory). ``codec.resolved_include_chars`` at the top level
  is NOT the codec (it is the ``--codec.include`` setting).
- **Calamari 2.0** (``version`` 3, upgraded by 2.3.1 on load): ``scenario_params.model_params.layers[]``
  with ``type`` (``convolutional``, ``max_pooling``, ``lstm`` …), ``stride``, a separate
  ``model_params.dropout``, and ``scenario_params.data_params.codec.charset``.
- **Calamari 1** (1.0–1.3: ``version`` 2; protobuf ``CheckpointParams`` as JSON, camelCase keys, fields at
  their default (0, false, first enum value) left out): ``model.network.layers[]`` with ``type``
  (``CONVOLUTIONAL`` when absent, ``MAX_POOLING``, ``LSTM``, ``TRANSPOSED_CONVOLUTIONAL``,
  ``DILATED_BLOCK``, ``CONCAT``), ``filters``, ``kernelSize.{x,y}``, ``stride.{x,y}``, ``hiddenNodes``,
  ``dilatedDepth``, ``concatIndices``; ``model.network.dropout`` (absent = 0) and ``model.codec.charset``.
  Files ``model_NNNNNNNN.ckpt.json``, ``best.ckpt.json``, ``model_last.ckpt.json`` (+ ``.h5``). Without
  ``version`` (0) or with 1 it is a Calamari 0.x model with TensorFlow-1 weights, which neither engine can
  load.

The ``--network`` grammar (comma-separated ``key=value``; x is the first number of a pair, y the second):

- Calamari 2: ``cnn=F:KXxKY[:SXxSY]`` (default kernel 3x3, stride 1x1), ``pool=PXxPY[:SXxSY]`` (default
  stride = pool size), ``lstm=N``, ``dropout=R`` (a layer), ``db=F:DEPTH[:KX[xKY]]``,
  ``tcnn=F[:SXxSY[:KXxKY]]``, ``concat=I:J`` (no ``dropout=``, no dropout layer); or a shipped name
  (``def``, ``deep3``, ``htr+``), or a path
  ``*.json`` holding a list of layer dicts (not a whole ``.ckpt.json``). Activation (relu), padding (same)
  and the LSTM merge mode (concat) cannot be set in a string.
- Calamari 1: ``cnn=F[:KX[xKY]]`` (default kernel 2x2!, stride always 1), ``pool=KX[xKY][:SXxSY]``,
  ``lstm=N``, ``db=F:DEPTH[:KX[xKY]]``, ``tcnn=F[:SX[xSY]]`` (kernel always 2x2), ``concat=I:J``;
  ``dropout=R`` is one network-wide rate (applied after the LSTMs), not a layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.errors import DataError

CALAMARI2_CHECKPOINT_VERSIONS = (3, 4, 5, 6)  # 6 = Calamari 2.3 (what 2.3.1 writes); it upgrades 3-5 on load
CALAMARI1_CHECKPOINT_VERSION = 2  # what Calamari 1.0.7 writes and loads


@dataclass(frozen=True)
class ModelInfo:
    path: Path  # the .ckpt.json file
    version: int  # 1 or 2 (Calamari major version that wrote it)
    network: str  # value for --network reproducing the model's layers
    charset: tuple[str, ...]  # the codec's characters (excluding the CTC blank)


class _Unexpressible(Exception):
    """A layer the --network string grammar cannot reproduce."""


# Calamari 2's shipped networks (calamari_ocr/resources/networks/*.json) in the normalized form of _v2_layer.
# "def" is left out on purpose: its explicit string is Calamari's documented default and reads better.
_CONV = ("conv", "same", "relu")
_PREDEFINED_V2: dict[str, tuple[tuple, ...]] = {
    "deep3": (
        (*_CONV, 40, (3, 3), (1, 1)),
        ("pool", "same", (2, 2), (2, 2)),
        (*_CONV, 60, (3, 3), (1, 1)),
        ("pool", "same", (2, 2), (2, 2)),
        (*_CONV, 120, (3, 3), (1, 1)),
        ("lstm", 200, "concat"),
        ("lstm", 200, "concat"),
        ("lstm", 200, "concat"),
        ("dropout", 0.5),
    ),
    "htr+": (
        ("conv", "same", "leaky_relu", 8, (2, 4), (2, 4)),
        ("conv", "same", "leaky_relu", 32, (2, 4), (1, 1)),
        ("pool", "same", (2, 4), (2, 4)),
        ("conv", "same", "leaky_relu", 64, (3, 3), (1, 1)),
        ("pool", "same", (2, 1), (2, 1)),
        ("lstm", 256, "sum"),
        ("dropout", 0.5),
        ("lstm", 256, "sum"),
        ("dropout", 0.5),
        ("lstm", 256, "sum"),
        ("dropout", 0.5),
    ),
}


# ---------------------------------------------------------------------------------------------- public API


def json_path(path: Path | str) -> Path:
    """``…/0.ckpt`` or ``…/0.ckpt.json`` → ``…/0.ckpt.json`` (any ``*.json`` is taken as it is)."""
    path = Path(path)
    return path if path.name.endswith(".json") else path.with_name(path.name + ".json")


def read_model(path: Path) -> ModelInfo:
    """Version, ``--network`` value and codec of the model whose JSON is ``path`` (``.json`` optional).

    Raises :class:`DataError` (one line naming the file) if the file is missing, is not JSON, is no Calamari
    model, is a Calamari 0.x model, or has a layer that no ``--network`` string reproduces.
    """
    file = json_path(path)
    if not file.is_file():
        raise DataError(f"model not found: expected {file} (and its weights beside it)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"model {file} is not UTF-8 text: {exc}") from None
    except ValueError as exc:
        raise DataError(f"model {file} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise DataError(f"model {file} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise DataError(
            f"model {file} is not a Calamari model (the JSON is a {type(data).__name__}, not an object)"
        )
    try:
        if "scenario" in data or "scenario_params" in data:
            version, network, charset = 2, *_parse_v2(data)
        elif isinstance(data.get("model"), dict) and "network" in data["model"]:
            version, network, charset = 1, *_parse_v1(data)
        else:
            raise _Bad(
                f"is not a Calamari model (no 'scenario' (Calamari 2) or 'model.network' (Calamari 1)); "
                f"top-level keys: {', '.join(sorted(data)[:8]) or 'none'}"
            )
    except _Bad as exc:
        raise DataError(f"model {file} {exc}") from None
    except _Unexpressible as exc:
        raise DataError(f"model {file}: {exc}; no --network string reproduces it") from None
    return ModelInfo(path=file, version=version, network=network, charset=charset)


def weights_arg(path: Path, version: int) -> str:
    """The value for ``--warmstart.model`` (Calamari 2: ``…/X.ckpt.json``) or ``--weights`` (1: ``…/X.ckpt``).

    Both engines cut the path after its last ``.ckpt`` and expect ``<that>.json`` beside the weights, so only
    ``<name>.ckpt.json`` models qualify (not ``checkpoint/checkpoint_NNNN/trainer_params.json``, which is for
    resuming). The path is made absolute (the engine may run in another directory).
    """
    file = json_path(path).absolute()
    if not file.name.endswith(".ckpt.json"):
        raise DataError(
            f"cannot warm-start from {file}: Calamari needs a '<name>.ckpt.json' model such as "
            f"best.ckpt.json or 0.ckpt.json (a checkpoint's trainer_params.json is for resuming)"
        )
    if not file.is_file():
        raise DataError(f"warm-start model not found: expected {file}")
    ckpt = file.with_name(file.name[: -len(".json")])
    h5 = ckpt.with_name(ckpt.name + ".h5")
    if version == 2:
        if not (ckpt.is_dir() or h5.is_file()):
            raise DataError(
                f"warm-start model {file} has no weights: expected the directory {ckpt} "
                f"(or {h5} for models of Calamari 2.0-2.2)"
            )
        return str(file)
    if version == 1:
        if not h5.is_file():
            raise DataError(f"warm-start model {file} has no weights: expected {h5}")
        return str(ckpt)
    raise DataError(f"cannot warm-start from {file}: unknown Calamari version {version!r} (expected 1 or 2)")


# ------------------------------------------------------------------------------------------------ helpers


class _Bad(Exception):
    """The JSON lacks a key or has a value of the wrong kind (message completes 'model <file> …')."""


def _dig(d: Any, *keys: str | int) -> Any:
    cur = d
    for i, key in enumerate(keys):
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            where = ".".join(str(k) for k in keys[: i + 1])
            raise _Bad(f"lacks '{where}'") from None
    return cur


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _Bad(f"has a non-integer {what}: {value!r}")
    return int(value)


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"has a non-number {what}: {value!r}")
    return float(value)


def _num(x: float) -> str:
    """A rate as written in a network string: 0.5, 0.3 (not 0.30000001192092896 from float32 protobuf)."""
    return format(float(f"{x:.6g}"), "g")


def _charset(chars: Any, where: str) -> tuple[str, ...]:
    if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
        raise _Bad(f"has no list of characters at '{where}'")
    if chars and chars[0] == "":
        chars = chars[1:]  # index 0 is the CTC blank
    return tuple(chars)


def _pair(d: Any, key: str, what: str, default: tuple[int, int] | None = None) -> tuple[int, int]:
    """An ``{x, y}`` object as (x, y); protobuf JSON leaves out zero coordinates."""
    v = d.get(key) if isinstance(d, dict) else None
    if v is None:
        if default is None:
            raise _Bad(f"has a {what} without '{key}'")
        return default
    if not isinstance(v, dict):
        raise _Bad(f"has a {what} whose '{key}' is not an {{x, y}} object: {v!r}")
    return _int(v.get("x", 0), f"{what} {key}.x"), _int(v.get("y", 0), f"{what} {key}.y")


def _xy(p: tuple[int, int]) -> str:
    return f"{p[0]}x{p[1]}"


# ------------------------------------------------------------------------------------------------ Calamari 2


def _parse_v2(d: dict) -> tuple[str, tuple[str, ...]]:
    version = d.get("version", 0)
    if version not in CALAMARI2_CHECKPOINT_VERSIONS:
        if isinstance(version, int) and version > max(CALAMARI2_CHECKPOINT_VERSIONS):
            raise _Bad(
                f"has checkpoint version {version}, newer than Calamari 2.3 writes "
                f"({max(CALAMARI2_CHECKPOINT_VERSIONS)}); a newer Calamari wrote it"
            )
        raise _Bad(
            f"has an unknown Calamari 2 checkpoint version {version!r} "
            f"(known: {', '.join(map(str, CALAMARI2_CHECKPOINT_VERSIONS))})"
        )
    if "scenario" in d:  # Calamari 2.1+ (versions 4-6)
        layers = _dig(d, "scenario", "model", "layers")
        if not isinstance(layers, list):
            raise _Bad("has no list at 'scenario.model.layers'")
        if not layers:
            raise _Bad("has no layers at 'scenario.model.layers'")
        norm = tuple(_v2_layer(layer, i) for i, layer in enumerate(layers))
        charset = _charset(_dig(d, "scenario", "data", "codec", "charset"), "scenario.data.codec.charset")
    else:  # Calamari 2.0 (version 3)
        model = _dig(d, "scenario_params", "model_params")
        layers = _dig(model, "layers")
        if not isinstance(layers, list):
            raise _Bad("has no list at 'scenario_params.model_params.layers'")
        if not layers:
            raise _Bad("has no layers at 'scenario_params.model_params.layers'")
        norm = tuple(_v20_layer(layer, i) for i, layer in enumerate(layers))
        rate = _float(model.get("dropout", 0) or 0, "model_params.dropout")
        if rate > 0:
            norm += (("dropout", rate),)
        charset = _charset(
            _dig(d, "scenario_params", "data_params", "codec", "charset"),
            "scenario_params.data_params.codec.charset",
        )
    return _v2_network(norm), charset


def _v2_layer(layer: Any, i: int) -> tuple:
    """A Calamari 2.1+ layer dict → a normalized tuple (the same for equal structures, names ignored)."""
    if not isinstance(layer, dict) or not isinstance(layer.get("__cls__"), str):
        raise _Bad(f"has a layer without '__cls__' at scenario.model.layers[{i}]")
    cls = layer["__cls__"].rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    what = f"layer {i} ({cls})"
    pad, act = layer.get("padding", "same"), layer.get("activation", "relu")
    if cls == "Conv2DLayerParams":
        return (
            "conv",
            pad,
            act,
            _int(layer.get("filters", 40), f"{what} filters"),
            _pair(layer, "kernel_size", what, (3, 3)),
            _pair(layer, "strides", what, (1, 1)),
        )
    if cls == "MaxPool2DLayerParams":
        size = _pair(layer, "pool_size", what, (2, 2))
        strides = _pair(layer, "strides", what, (-1, -1)) if layer.get("strides") is not None else (-1, -1)
        real = tuple(s if s >= 0 else p for s, p in zip(strides, size, strict=True))  # as real_strides()
        return ("pool", pad, size, real)
    if cls == "BiLSTMLayerParams":
        return (
            "lstm",
            _int(layer.get("hidden_nodes", 200), f"{what} hidden_nodes"),
            layer.get("merge_mode", "concat"),
        )
    if cls == "DropoutLayerParams":
        return ("dropout", _float(layer.get("rate", 0.5), f"{what} rate"))
    if cls == "DilatedBlockLayerParams":
        return (
            "db",
            pad,
            act,
            _int(layer.get("filters", 40), f"{what} filters"),
            _int(layer.get("dilated_depth", 2), f"{what} dilated_depth"),
            _pair(layer, "kernel_size", what, (3, 3)),
            _pair(layer, "strides", what, (1, 1)),
        )
    if cls == "TransposedConv2DLayerParams":
        return (
            "tconv",
            pad,
            act,
            _int(layer.get("filters", 40), f"{what} filters"),
            _pair(layer, "kernel_size", what, (3, 3)),
            _pair(layer, "strides", what, (2, 2)),
        )
    if cls == "ConcatLayerParams":
        idx = layer.get("concat_indices")
        if not isinstance(idx, list):
            raise _Bad(f"has a {what} without a list 'concat_indices'")
        return ("concat", tuple(_int(v, f"{what} concat_indices") for v in idx))
    raise _Unexpressible(f"{what} is a layer type hsbcala does not know")


def _v20_layer(layer: Any, i: int) -> tuple:
    """A Calamari 2.0 (checkpoint version 3) layer dict (``type`` = convolutional …) → a normalized tuple."""
    if not isinstance(layer, dict):
        raise _Bad(f"has a layer that is not an object at scenario_params.model_params.layers[{i}]")
    kind = layer.get("type")
    what = f"layer {i} ({kind})"
    if kind == "convolutional":
        return (
            "conv",
            "same",
            "relu",
            _int(layer.get("filters", 0), f"{what} filters"),
            _pair(layer, "kernel_size", what),
            _pair(layer, "stride", what, (1, 1)),
        )
    if kind == "max_pooling":
        size = _pair(layer, "kernel_size", what)
        stride = _pair(layer, "stride", what, size)
        return ("pool", "same", size, tuple(s if s > 0 else p for s, p in zip(stride, size, strict=True)))
    if kind == "lstm":
        return ("lstm", _int(layer.get("hidden_nodes", 0), f"{what} hidden_nodes"), "concat")
    if kind == "dilated_block":
        return (
            "db",
            "same",
            "relu",
            _int(layer.get("filters", 0), f"{what} filters"),
            _int(layer.get("dilated_depth", 0), f"{what} dilated_depth"),
            _pair(layer, "kernel_size", what),
            _pair(layer, "stride", what, (1, 1)),
        )
    if kind == "transposed_conv":
        return (
            "tconv",
            "same",
            "relu",
            _int(layer.get("filters", 0), f"{what} filters"),
            _pair(layer, "kernel_size", what),
            _pair(layer, "stride", what),
        )
    if kind == "concat":
        return ("concat", tuple(_int(v, f"{what} concat_indices") for v in layer.get("concat_indices", [])))
    raise _Unexpressible(f"{what} is a layer type hsbcala does not know")


def _v2_network(norm: tuple[tuple, ...]) -> str:
    for name, layers in _PREDEFINED_V2.items():
        if norm == layers:
            return name
    return ",".join(_v2_part(layer, i) for i, layer in enumerate(norm))


def _v2_part(layer: tuple, i: int) -> str:
    kind = layer[0]
    if kind in ("conv", "db", "tconv"):
        pad, act = layer[1], layer[2]
        if (pad, act) != ("same", "relu"):
            raise _Unexpressible(
                f"layer {i} ({kind}) has padding={pad!r}, activation={act!r} "
                f"(a string always gives 'same', 'relu')"
            )
    if kind == "conv":
        _, _, _, filters, kernel, strides = layer
        return f"cnn={filters}:{_xy(kernel)}" + (f":{_xy(strides)}" if strides != (1, 1) else "")
    if kind == "pool":
        _, pad, size, real = layer
        if pad != "same":
            raise _Unexpressible(f"layer {i} (pool) has padding={pad!r} (a string always gives 'same')")
        return f"pool={_xy(size)}" + (f":{_xy(real)}" if real != size else "")
    if kind == "lstm":
        _, nodes, merge = layer
        if merge != "concat":
            raise _Unexpressible(
                f"layer {i} (lstm) has merge_mode={merge!r} (a string always gives 'concat')"
            )
        return f"lstm={nodes}"
    if kind == "dropout":
        return f"dropout={_num(layer[1])}"
    if kind == "db":
        _, _, _, filters, depth, kernel, strides = layer
        if strides != (1, 1):
            raise _Unexpressible(f"layer {i} (db) has strides {_xy(strides)} (a string always gives 1x1)")
        return f"db={filters}:{depth}:{_xy(kernel)}"
    if kind == "tconv":
        _, _, _, filters, kernel, strides = layer
        return f"tcnn={filters}:{_xy(strides)}:{_xy(kernel)}"
    if kind == "concat":
        if len(layer[1]) != 2:
            raise _Unexpressible(f"layer {i} (concat) joins {len(layer[1])} layers (a string joins 2)")
        return f"concat={layer[1][0]}:{layer[1][1]}"
    raise AssertionError(kind)


# ------------------------------------------------------------------------------------------------ Calamari 1


_V1_TYPES = ("CONVOLUTIONAL", "MAX_POOLING", "LSTM", "TRANSPOSED_CONVOLUTIONAL", "DILATED_BLOCK", "CONCAT")


def _pb(d: dict, camel: str, snake: str, default: Any = None) -> Any:
    """A protobuf JSON field: written in camelCase, but protobuf also reads the proto (snake_case) name."""
    if camel in d:
        return d[camel]
    return d.get(snake, default)


def _parse_v1(d: dict) -> tuple[str, tuple[str, ...]]:
    version = d.get("version", 0)
    if version in (0, 1):
        raise _Bad(
            f"was written by Calamari 0.x (checkpoint version {version}, TensorFlow-1 weights); "
            f"Calamari 1.0.7 cannot convert it: use the model's Calamari 1.x or 2.x release, or retrain"
        )
    if version != CALAMARI1_CHECKPOINT_VERSION:
        raise _Bad(
            f"has an unknown Calamari 1 checkpoint version {version!r} "
            f"(Calamari 1.0.7 reads {CALAMARI1_CHECKPOINT_VERSION})"
        )
    network = _dig(d, "model", "network")
    layers = network.get("layers") if isinstance(network, dict) else None
    if not isinstance(layers, list) or not layers:
        raise _Bad("has no layers at 'model.network.layers'")
    parts = [_v1_part(layer, i) for i, layer in enumerate(layers)]
    rate = _float(network.get("dropout", 0) or 0, "model.network.dropout")
    if rate > 0:
        parts.append(f"dropout={_num(rate)}")
    charset = _charset(_dig(d, "model", "codec", "charset"), "model.codec.charset")
    return ",".join(parts), charset


def _v1_part(layer: Any, i: int) -> str:
    if not isinstance(layer, dict):
        raise _Bad(f"has a layer that is not an object at model.network.layers[{i}]")
    kind = layer.get("type", "CONVOLUTIONAL")
    if isinstance(kind, int) and not isinstance(kind, bool) and 0 <= kind < len(_V1_TYPES):
        kind = _V1_TYPES[kind]  # protobuf also reads enum numbers
    what = f"layer {i} ({kind})"
    filters = _int(layer.get("filters", 0), f"{what} filters")
    kernel_key = _key(layer, "kernelSize", "kernel_size")
    if kind == "CONVOLUTIONAL":  # the engine ignores the stride of a convolution (always 1)
        return f"cnn={filters}:{_xy(_pair(layer, kernel_key, what))}"
    if kind == "MAX_POOLING":
        size = _pair(layer, kernel_key, what)
        stride = _pair(layer, "stride", what, size)
        if stride == (0, 0):  # left out: the parser's default is the pool size
            stride = size
        return f"pool={_xy(size)}" + (f":{_xy(stride)}" if stride != size else "")
    if kind == "LSTM":
        return f"lstm={_int(_pb(layer, 'hiddenNodes', 'hidden_nodes', 0), f'{what} hiddenNodes')}"
    if kind == "DILATED_BLOCK":
        depth = _int(_pb(layer, "dilatedDepth", "dilated_depth", 0), f"{what} dilatedDepth")
        return f"db={filters}:{depth}:{_xy(_pair(layer, kernel_key, what))}"
    if kind == "TRANSPOSED_CONVOLUTIONAL":
        kernel = _pair(layer, kernel_key, what)
        if kernel != (2, 2):
            raise _Unexpressible(f"{what} has kernel {_xy(kernel)} (a Calamari 1 string always gives 2x2)")
        return f"tcnn={filters}:{_xy(_pair(layer, 'stride', what))}"
    if kind == "CONCAT":
        idx = _pb(layer, "concatIndices", "concat_indices", [])
        if not isinstance(idx, list) or len(idx) != 2:
            raise _Unexpressible(f"{what} joins {idx!r} (a string joins 2 layers)")
        return f"concat={_int(idx[0], what)}:{_int(idx[1], what)}"
    raise _Unexpressible(f"{what} is a layer type hsbcala does not know")


def _key(d: dict, camel: str, snake: str) -> str:
    return camel if camel in d or snake not in d else snake
