"""Where a new character's output weights start on a warm start whose codec grows (``train.new_chars_init``).

Both engines give a character the warm-start model does not know a fresh output row: Calamari 2.3.1
(``calamari_ocr/ocr/training/warmstart.py``) and Calamari 1.0.7 (``TensorflowModel.copy_weights_from_model``)
append uniform(-0.1, 0.1) kernel columns (bias: mean - std of the others, resp. 0) for the "appends" of
``Codec.align``. With ``train.new_chars_init=base`` hsbcala instead prepares the copy of the warm-start model in
``<model_dir>/warmstart/``: each new character is appended to the model's own codec, with its logits kernel column
and bias a copy of its base letter's (ě → e by Unicode decomposition, ł → l from ``train.new_chars_table``). The
engine then finds those characters in the loaded codec and has nothing to fill for them (its ``align`` keeps
characters present in both codecs at their place); characters without a base in the model's codec are left to
the engine (random, as before) and named.

This module is the launcher's pure part (which base, validation, the record); the weights are rewritten by
``hsbcala/engines/newchars_prepare.py``, run by the version's own engine Python (h5py, TensorFlow, Calamari).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.core.errors import ConfigError, EngineError

MODES = ("random", "base")
RECORD = "new-chars.json"  # in <model_dir>/warmstart/: what the preparation did
PREPARE_SCRIPT = Path(__file__).parents[1] / "engines" / "newchars_prepare.py"
PREPARE_LOG = "new-chars-prepare.log"  # the script's output, beside RECORD
PREPARE_TIMEOUT_S = 900.0  # loading TensorFlow and one model takes well under a minute; a hang must end


@dataclass(frozen=True)
class Origin:
    """Where one new character's output weights start."""

    char: str
    base: str | None  # the model's character whose row is copied; None: random (the engine's own init)
    how: str  # "decomposition" | "table" | "no base" | "random" (train.new_chars_init=random)

    def describe(self) -> str:
        if self.base is not None:
            return (
                f"copy of {self.base} ({'Unicode decomposition' if self.how == 'decomposition' else 'table'})"
            )
        if self.how == "random":
            return "random (train.new_chars_init=random)"
        return "random (no base letter in the model's codec)"


def decomposition_base(c: str) -> str | None:
    """The base letter of a precomposed character (ě → e, Č → C, ǘ → u), or None (ł, ß, a mark itself)."""
    nfd = unicodedata.normalize("NFD", c)
    if len(nfd) < 2 or unicodedata.combining(nfd[0]) or not all(unicodedata.combining(m) for m in nfd[1:]):
        return None
    return nfd[0]


def check_table(table: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """``train.new_chars_table`` (entries ``"ł=l"``; a mapping also does) as a dict of one character to one
    character (NFC); else one line naming the entry. A list of strings, not a dict, because Hydra's command-line
    grammar takes no non-ASCII dict keys: ``train.new_chars_table='[ł=l,Ł=L,đ=d]'`` works, a dict would not."""
    pairs = list(table.items()) if isinstance(table, Mapping) else [_split_entry(e) for e in table]
    out: dict[str, str] = {}
    for key, value in pairs:
        k, v = unicodedata.normalize("NFC", key), unicodedata.normalize("NFC", value)
        if len(k) != 1 or len(v) != 1:
            raise ConfigError(
                f"train.new_chars_table: entry '{key}={value}' maps {len(k)} to {len(v)} characters; "
                f"each entry maps one character to one base character, e.g. 'ł=l' (one output row is copied)"
            )
        out[k] = v
    return out


def _split_entry(entry: Any) -> tuple[str, str]:
    if not isinstance(entry, str) or "=" not in entry[1:]:
        raise ConfigError(
            f"train.new_chars_table: entry {entry!r} is not CHARACTER=BASE (e.g. 'ł=l'; on the command line "
            f"quote the list: train.new_chars_table='[ł=l,Ł=L]')"
        )
    i = entry.index("=", 1)  # the key may itself be "="
    return entry[:i], entry[i + 1 :]


def check_config(train: Any, warmstart: Any) -> dict[str, str]:
    """Before anything starts: ``base`` needs a warm start, and the table maps one character to one (returned
    as :func:`check_table` reads it)."""
    if str(train.new_chars_init) == "base" and not warmstart.model:
        raise ConfigError(
            "train.new_chars_init=base needs a warm start: set warmstart.model (or preset=full), "
            "or train.new_chars_init=random"
        )
    return check_table(list(train.new_chars_table or []))


def origins(
    new: Iterable[str],
    model_charset: Iterable[str],
    table: Iterable[str] | Mapping[str, str],
    mode: str = "base",
) -> list[Origin]:
    """For each new character (in order) its base in the model's codec: the table first, then decomposition.

    A table entry for a new character whose base is not in the model's codec is an error (the user asked for
    it); a decomposition base the model lacks just leaves the character random."""
    if mode not in MODES:
        raise ConfigError(f"train.new_chars_init={mode!r} is not one of: {', '.join(MODES)}")
    table = check_table(table)
    charset = set(model_charset)
    out = []
    for c in new:
        if mode == "random":
            out.append(Origin(c, None, "random"))
        elif c in table:
            if table[c] not in charset:
                raise ConfigError(
                    f"train.new_chars_table: {c} → {table[c]}: the base letter {table[c]!r} is not in the "
                    f"warm-start model's codec; map {c} to a character the model knows, or remove the entry"
                )
            out.append(Origin(c, table[c], "table"))
        else:
            base = decomposition_base(c)
            if base is not None and base in charset:
                out.append(Origin(c, base, "decomposition"))
            else:
                out.append(Origin(c, None, "no base"))
    return out


def record(model: Path, found: list[Origin]) -> dict[str, Any]:
    """The JSON record (``warmstart/new-chars.json``, the manifest's ``warmstart_new_chars``)."""
    return {
        "format": "hsbcala-new-chars/1",
        "source_model": str(model),
        "copied": {o.char: o.base for o in found if o.base is not None},
        "random": [o.char for o in found if o.base is None],
        "origins": [{"char": o.char, "base": o.base, "how": o.how} for o in found],
    }


def prepare(python: str, version: int, model_json: Path, found: list[Origin], wrap=lambda argv: argv) -> dict:
    """Rewrite the model copy ``model_json`` (its JSON and weights, in place) in the engine environment.

    ``python``: the engine environment's interpreter; ``wrap``: its module loads. Returns the script's summary.
    The script runs through the one engine runner (own session, Slurm's USR signals ignored, a time limit), its
    output in ``<copy>/new-chars-prepare.log`` beside the record.
    """
    from hsbcala.engines.process import EngineProcess

    pairs = [[o.char, o.base] for o in found if o.base is not None]
    spec = {"version": version, "model": str(model_json), "add": pairs}
    argv = wrap([python, str(PREPARE_SCRIPT), json.dumps(spec, ensure_ascii=True)])
    log = model_json.parent / PREPARE_LOG
    with EngineProcess(argv, log, log_mode="w", tail=15, timeout_s=PREPARE_TIMEOUT_S) as proc:
        last = [line for line in proc.lines() if line.startswith("{")]
        code = proc.wait()
    if code != 0:
        raise EngineError(
            f"preparing the warm-start model for train.new_chars_init=base failed (exit {code}, log: {log}):\n"
            f"{proc.output_tail()}"
        )
    return json.loads(last[-1]) if last else {}
