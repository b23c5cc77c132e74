"""A Calamari model's version, network and codec, read from its JSON (no TensorFlow, no Calamari).

A warm start only works with the network the pretrained model was trained with: neither engine takes the
layers from the model (Calamari 2.3.1 even logs "Keeping existing network (…)" and then builds the
``--network`` it was given, or its default, and fails on the first weight of another shape). So the launcher
derives ``--network`` from the model file. The codec may change: both engines keep the characters shared
with the model, append new ones at the end and (Calamari 2 with ``--codec.keep_loaded False``, Calamari 1 by
default) drop the ones the new data lacks.

Where the versions differ (file layout, checkpoint versions, the ``--network`` grammar) they are read by
:mod:`~hsbcala.engines.modeljson_v2` (Calamari 2, also 2.0) and :mod:`~hsbcala.engines.modeljson_v1`
(Calamari 1); :func:`read_model` tells them apart by the JSON's layout. This module holds what both share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hsbcala.core.errors import DataError
from hsbcala.engines.modeljson_parse import _Bad, _Unexpressible
from hsbcala.engines.modeljson_v1 import _parse_v1
from hsbcala.engines.modeljson_v2 import _parse_v2


@dataclass(frozen=True)
class ModelInfo:
    path: Path  # the .ckpt.json file
    version: int  # 1 or 2 (Calamari major version that wrote it)
    network: str  # value for --network reproducing the model's layers
    charset: tuple[str, ...]  # the codec's characters (excluding the CTC blank)


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
