"""A Calamari 1 model's ``--network`` value and codec, from its JSON (see :mod:`hsbcala.engines.modeljson`).

File format (paths of the keys that matter):

- **Calamari 1** (1.0–1.3: ``version`` 2; protobuf ``CheckpointParams`` as JSON, camelCase keys, fields at
  their default (0, false, first enum value) left out): ``model.network.layers[]`` with ``type``
  (``CONVOLUTIONAL`` when absent, ``MAX_POOLING``, ``LSTM``, ``TRANSPOSED_CONVOLUTIONAL``,
  ``DILATED_BLOCK``, ``CONCAT``), ``filters``, ``kernelSize.{x,y}``, ``stride.{x,y}``, ``hiddenNodes``,
  ``dilatedDepth``, ``concatIndices``; ``model.network.dropout`` (absent = 0) and ``model.codec.charset``.
  Files ``model_NNNNNNNN.ckpt.json``, ``best.ckpt.json``, ``model_last.ckpt.json`` (+ ``.h5``). Without
  ``version`` (0) or with 1 it is a Calamari 0.x model with TensorFlow-1 weights, which neither engine can
  load.

The ``--network`` grammar (comma-separated ``key=value``; x is the first number of a pair, y the second):

- Calamari 1: ``cnn=F[:KX[xKY]]`` (default kernel 2x2!, stride always 1), ``pool=KX[xKY][:SXxSY]``,
  ``lstm=N``, ``db=F:DEPTH[:KX[xKY]]``, ``tcnn=F[:SX[xSY]]`` (kernel always 2x2), ``concat=I:J``;
  ``dropout=R`` is one network-wide rate (applied after the LSTMs), not a layer.
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

CALAMARI1_CHECKPOINT_VERSION = 2  # what Calamari 1.0.7 writes and loads

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
