"""The data manifest: every line a training uses, with hashes, sizes and its split, plus the checks' report.

``<model_dir>/manifest.json`` (format ``hsbcala-manifest/1``)::

    {"format": …, "status": "passed" | "failed", "content_sha256": …,
     "totals": {"lines", "train": {"lines", "chars", "documents"}, "val": {…}, "dropped", "image_bytes",
                "charset_size"},
     "checks": {<check>: {"action", "count", "first": [{"path", "reason"}, …]}, …},
     "dropped": [{"image", "check"}, …, {"gt", "check": "missing_image"}, …],
     "split": {"mode": "given" | "split", "seed", "val_fraction", "by", "pattern", "reused"},
     "excluded": {"files", "count", "lines", "not_in_data"},  (only with data.exclude; + totals.excluded)
     "lines": [{"image", "gt", "text", "image_sha256", "gt_sha256", "width", "height", "variant",
                "document", "split"}, …]}

``lines`` are sorted (train before val, then by path), one per line of the file, so manifests diff well.
The file holds no time stamps: the same data gives the same bytes.

``content_sha256`` identifies the data independent of where it lies: the SHA-256 of the sorted
``<split>\\t<image sha256>\\t<gt sha256>`` lines. Two runs with equal ``data.content_sha256`` tags trained and
validated on the same lines, even from different copies of the data; ``data.manifest_sha256`` (the file's
hash) also pins the paths.

``variant`` is the part of the file name between the line id and the extension (``010001.bin.png`` → ``bin``,
``p1.nrm.png`` → ``nrm``); lines sharing a ``.gt.txt`` (Calamari's rule) are variants of one line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsbcala.core import fsutil

MANIFEST_FILE = "manifest.json"
FORMAT = "hsbcala-manifest/1"


def variant_of(image: Path) -> str | None:
    parts = Path(image).name.split(".")
    return ".".join(parts[1:-1]) if len(parts) > 2 else None


def content_sha256(records: Sequence[dict[str, Any]]) -> str:
    rows = sorted(f"{r['split']}\t{r['image_sha256']}\t{r['gt_sha256']}" for r in records)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def split_digest(manifest: dict[str, Any], split: str) -> str:
    """One split's identity, as the console names it and as the digest of its MLflow dataset (16 hex): the
    content hash of that split's lines only, so a run with the same training lines and other validation lines
    shows the same training dataset (issue 22, item 6: the console and MLflow named two different hashes)."""
    return content_sha256([r for r in manifest.get("lines", []) if r.get("split") == split])[:16]


def build(
    kept: Sequence[Any],
    side: dict[Path, str],
    documents: dict[Path, str],
    *,
    status: str,
    checks: dict[str, Any],
    dropped: Sequence[tuple[Any, str]],
    split: dict[str, Any],
    dropped_gts: Sequence[Any] = (),
) -> dict[str, Any]:
    """The manifest of the kept lines (:class:`hsbcala.data.checks.Line`), with their side and document;
    ``dropped_gts``: the ``.gt.txt`` files without image that ``data.checks.missing_image=drop`` left out."""
    order = {"train": 0, "val": 1}
    records = [
        {
            "image": str(line.image),
            "gt": str(line.gt),
            "text": line.text,
            "image_sha256": line.image_sha256,
            "gt_sha256": line.gt_sha256,
            "width": line.width,
            "height": line.height,
            "variant": variant_of(line.image),
            "document": documents.get(line.image, line.image.parent.name),
            "split": side[line.image],
        }
        for line in kept
    ]
    records.sort(key=lambda r: (order[r["split"]], r["image"]))
    charset: set[str] = set()
    totals: dict[str, Any] = {"lines": len(records)}
    for name in ("train", "val"):
        mine = [line for line in kept if side[line.image] == name]
        texts = [line.nfc for line in mine]
        for t in texts:
            charset.update(t)
        totals[name] = {
            "lines": len(mine),
            "chars": sum(len(t) for t in texts),
            "documents": len({r["document"] for r in records if r["split"] == name}),
        }
    totals["dropped"] = len(dropped) + len(dropped_gts)
    totals["image_bytes"] = sum(line.image_bytes or 0 for line in kept)
    totals["charset_size"] = len(charset)
    return {
        "format": FORMAT,
        "status": status,
        "content_sha256": content_sha256(records),
        "totals": totals,
        "checks": checks,
        "dropped": [{"image": str(line.image), "check": check} for line, check in dropped]
        + [{"gt": str(gt), "check": "missing_image"} for gt in dropped_gts],
        "split": split,
        "lines": records,
    }


def dumps(manifest: dict[str, Any]) -> str:
    """Deterministic text: the header indented, then one line record per text line."""
    head = {k: v for k, v in manifest.items() if k != "lines"}
    text = json.dumps(head, ensure_ascii=False, indent=1)
    assert text.endswith("\n}")
    body = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in manifest["lines"])
    return text[:-2] + ',\n "lines": [\n' + body + ("\n" if body else "") + " ]\n}\n"


def write(manifest: dict[str, Any], directory: Path) -> tuple[Path, str]:
    """Write ``manifest.json`` into ``directory``; return its path and the SHA-256 of its bytes."""
    raw = dumps(manifest).encode("utf-8")
    path = Path(directory) / MANIFEST_FILE
    fsutil.atomic_write_bytes(path, raw)  # durable: evaluation and resume read it back, maybe after a crash
    return path, hashlib.sha256(raw).hexdigest()


def previous_content_sha256(directory: Path) -> str | None:
    """``content_sha256`` of the manifest already in ``directory`` (a previous launch), or None."""
    try:
        with open(Path(directory) / MANIFEST_FILE, encoding="utf-8") as f:
            head = f.read(4096)
    except OSError:
        return None
    key = '"content_sha256": "'
    pos = head.find(key)
    return head[pos + len(key) : pos + len(key) + 64] if pos >= 0 else None
