"""The model to ship: the registry alias ``champion`` moves only on a real win.

With ``mlflow.register=true`` an evaluation records its per-line results with the model's registered version
(:func:`register`; the MLflow calls are :func:`hsbcala.track.evaluation.record_and_decide`) and asks :func:`decide` whether the version replaces the
current champion. It does only when, on the same evaluation lines (the same :attr:`LineTable.digest`), its
CER is lower AND the paired bootstrap interval of the difference (:func:`hsbcala.evaluate.intervals.paired_difference`,
the same units resampled for both models) lies wholly below 0. A smaller CER whose interval includes 0 is
noise: the alias stays, and the decision says "not distinguishable from champion vN (difference +x.xx
[lo, hi])". The first version becomes champion. Versions of either Calamari version compete: each keeps the
GT character count of its own normalisation (``chars_b``).

The lines are identified by content, not by path: a line's key is the SHA-256 of its image and of its GT
file's text, so a copy of the same lines elsewhere is the same set, and another set (one line more, one GT
corrected) is not comparable: said, never guessed. Pure (no MLflow), so it is tested on its own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.core.console import say
from hsbcala.evaluate import intervals
from hsbcala.track import evaluation

ALIAS = evaluation.CHAMPION_ALIAS


@dataclass(frozen=True)
class LineTable:
    """One model's per-line results on one line set, keyed by line content (see the module docstring)."""

    keys: tuple[str, ...]
    documents: tuple[str, ...]
    chars: tuple[int, ...]
    errors: tuple[int, ...]

    @property
    def digest(self) -> str:
        """The line set's identity: SHA-256 of the sorted line keys (independent of order and paths)."""
        return hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()

    @property
    def cer(self) -> float | None:
        total = sum(self.chars)
        return sum(self.errors) / total if total else None

    def dumps(self) -> str:
        rows = zip(self.keys, self.documents, self.chars, self.errors, strict=True)
        return "key\tdocument\tchars\terrors\n" + "".join(f"{k}\t{d}\t{c}\t{e}\n" for k, d, c, e in rows)

    @classmethod
    def loads(cls, text: str) -> LineTable:
        lines = text.splitlines()
        if not lines or lines[0].split("\t") != ["key", "document", "chars", "errors"]:
            raise ValueError(
                "not a per-line table of hsbcala.evaluate.champion (header key/document/chars/errors)"
            )
        cells = [line.split("\t") for line in lines[1:] if line]
        return cls(
            tuple(c[0] for c in cells),
            tuple(c[1] for c in cells),
            tuple(int(c[2]) for c in cells),
            tuple(int(c[3]) for c in cells),
        )


def line_key(image: Path, gt: str, sha256_of: Any = None) -> str:
    """``<image sha256>:<GT sha256>`` (``sha256_of``: a cached file hasher, e.g. HashCache.file_sha256)."""
    if sha256_of is None:
        image_sha = hashlib.sha256(Path(image).read_bytes()).hexdigest()
    else:
        image_sha = sha256_of(Path(image))
    return f"{image_sha}:{hashlib.sha256(gt.encode('utf-8')).hexdigest()}"


def table_of(images: list[Path], gt: dict[Path, str], rows: list[dict], sha256_of: Any = None) -> LineTable:
    """The table of one evaluated set: ``rows`` are its ``lines.tsv`` (:func:`hsbcala.evaluate.scoring.read_lines`),
    one per image in the set's order."""
    if len(rows) != len(images):
        raise ValueError(f"{len(rows)} scored lines for {len(images)} images")
    keys = []
    seen: Counter[str] = Counter()
    for img in images:
        key = line_key(img, gt[img], sha256_of)
        seen[key] += 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")  # the same line twice: two lines
    return LineTable(
        tuple(keys),
        tuple(r["document"] for r in rows),
        tuple(r["chars"] for r in rows),
        tuple(r["errors"] for r in rows),
    )


@dataclass(frozen=True)
class Decision:
    promote: bool
    message: str  # one line, for the console, the report and the version tag
    difference: dict | None = None  # the paired interval (Interval.as_dict), when there was a comparison


def _points(v: float) -> str:
    return f"{100 * v:+.2f}"


def decide(
    new: LineTable,
    version: str,
    champion: LineTable | None,
    champion_version: str | None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Decision:
    """Whether ``version`` (results ``new``) replaces the champion (None: there is none yet)."""
    if champion_version is None:
        return Decision(True, f"v{version} is the first version: champion")
    if champion_version == version:
        return Decision(False, f"v{version} is the champion already")
    if champion is None:
        return Decision(
            False,
            f"champion v{champion_version} has no results on these evaluation lines (digest "
            f"{new.digest[:12]}): not compared, the alias stays; evaluate it on the same lines with "
            f"mlflow.register=true first",
        )
    if champion.digest != new.digest:
        raise ValueError("the champion's table is of other lines")  # the caller looks it up by digest
    order = {k: i for i, k in enumerate(champion.keys)}
    idx = [order[k] for k in new.keys]
    docs_known = all(new.documents) and all(champion.documents[i] for i in idx)
    iv = intervals.paired_difference(
        new.errors,
        [champion.errors[i] for i in idx],
        new.chars,
        units=list(new.documents) if docs_known else None,
        chars_b=[champion.chars[i] for i in idx],
        resamples=resamples,
        level=level,
        seed=seed,
    )
    shown = f"difference {_points(iv.point) if iv.point is not None else 'n/a'} " + intervals.bounds_text(
        iv.as_dict(), signed=True, na="[n/a]"
    )
    if iv.point is not None and iv.point < 0 and iv.available and iv.high < 0:
        return Decision(True, f"v{version} replaces champion v{champion_version} ({shown})", iv.as_dict())
    if iv.point is not None and iv.available and iv.low > 0:
        return Decision(
            False, f"worse than champion v{champion_version} ({shown}); the alias stays", iv.as_dict()
        )
    return Decision(
        False,
        f"not distinguishable from champion v{champion_version} ({shown}); the alias stays",
        iv.as_dict(),
    )


def decider(
    table: LineTable, version: str, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> Callable[[str | None, str | None], Decision]:
    """What :func:`hsbcala.track.evaluation.record_and_decide` asks, given the champion's per-line table (its
    text) and version: :func:`decide` for ``table`` of ``version``."""

    def ask(theirs: str | None, current: str | None) -> Decision:
        return decide(
            table,
            version,
            None if theirs is None else LineTable.loads(theirs),
            current,
            resamples=resamples,
            level=level,
            seed=seed,
        )

    return ask


def register(cfg: Any, p: Any, out_dir: Path, tracker: Any) -> dict:
    """The evaluated model's registered version, its per-line results on the main set kept with this
    evaluation's run, and the ``champion`` decision, said on the console (mlflow.register=true)."""
    from hsbcala.data import hashcache
    from hsbcala.evaluate import scoring

    s = p.sets[0]
    rows = scoring.read_lines(out_dir / s.name / scoring.LINES_FILE)
    cache = hashcache.HashCache(cfg.data.get("cache_dir") or hashcache.default_root())
    table = table_of(list(s.images), s.gt, rows, cache.file_sha256)
    cache.save()
    name = cfg.script.model_name
    version = evaluation.registered_version(tracker.client, cfg, p, tracker)
    iv = cfg.eval.intervals
    ask = decider(table, version, resamples=iv.resamples, level=iv.level, seed=iv.seed)
    out = evaluation.record_and_decide(tracker.client, name, version, tracker.run_id, table, ask)
    say(f"registry: {name} version {version}: {out['decision']}")
    return out
