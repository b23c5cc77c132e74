"""A Calamari 2 model's ``--network`` value and codec, from its JSON (see :mod:`hsbcala.engines.modeljson`).

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

The ``--network`` grammar (comma-separated ``key=value``; x is the first number of a pair, y the second):

- Calamari 2: ``cnn=F:KXxKY[:SXxSY]`` (default kernel 3x3, stride 1x1), ``pool=PXxPY[:SXxSY]`` (default
  stride = pool size), ``lstm=N``, ``dropout=R`` (a layer), ``db=F:DEPTH[:KX[xKY]]``,
  ``tcnn=F[:SXxSY[:KXxKY]]``, ``concat=I:J`` (no ``dropout=``, no dropout layer); or a shipped name
  (``def``, ``deep3``, ``htr+``), or a path
  ``*.json`` holding a list of layer dicts (not a whole ``.ckpt.json``). Activation (relu), padding (same)
  and the LSTM merge mode (concat) cannot be set in a string.
"""

from __future__ import annotations

from typing import Any

from hsbcala.engines.modeljson_parse import (
    _Bad,
    _charset,
    _dig,
    _float,
    _int,
    _num,
    _pair,
    _Unexpressible,
    _xy,
)

CALAMARI2_CHECKPOINT_VERSIONS = (3, 4, 5, 6)  # 6 = Calamari 2.3 (what 2.3.1 writes); it upgrades 3-5 on load

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
