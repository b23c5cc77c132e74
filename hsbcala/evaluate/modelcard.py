"""The model card of a release (``eval.export=true``): HTRMoPo v1, YAML front matter + Markdown.

HTRMoPo (github.com/mittagessen/HTRMoPo, ``schema/v1/metadata.schema.json`` and ``schema/v1/model_card.md``) is
the card kraken's ``ketos publish`` uploads to Zenodo; its front matter requires ``id``, ``authors``,
``summary``, ``license``, ``software_name``, ``language``, ``script`` and ``model_type``. The card is written
as ``README.md`` inside the release's model folder (HTRMoPo's file name for it) and logged to MLflow.

Every value comes from the evaluation, the model directory, the training run or a ``release.*`` key. What
hsbcala cannot know (authors, licence, the data's URL and licence, a description) is never made up: left out
of the front matter and written as "missing (set release.KEY)" in the text, and :func:`missing` names the
keys, so the console can say what to set before publishing.
"""

from __future__ import annotations

from typing import Any

from hsbcala.evaluate.intervals import bounds_text

SOFTWARE = "calamari"  # HTRMoPo's software_name: the engine that loads the model
MODEL_TYPE = ["recognition"]
_LANGUAGE_NAMES = {"hsb": "Upper Sorbian"}


def _pct(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f} %"


def _miss(key: str) -> str:
    return f"missing (set `release.{key}`)"


def front_matter(release: Any, facts: dict) -> dict:
    """The HTRMoPo v1 metadata; keys without a known value are left out (see :func:`missing`)."""
    main = facts["sets"][0] if facts["sets"] else None
    meta: dict[str, Any] = {
        "id": release.id or facts["name"],
        "summary": release.summary or facts["default_summary"],
    }
    authors = []
    for a in release.authors:
        entry = {"name": a.name}
        entry.update({k: a[k] for k in ("affiliation", "orcid") if a.get(k)})
        authors.append(entry)
    if authors:
        meta["authors"] = authors
    if release.license:
        meta["license"] = release.license
    meta["software_name"] = SOFTWARE
    meta["software_hints"] = [
        f"calamari-ocr=={facts['calamari_version']}",
        f"checkpoint={facts['checkpoint']}",
    ]
    meta["language"] = list(release.language)
    meta["script"] = [facts["iso15924"]]
    meta["model_type"] = list(MODEL_TYPE)
    metrics: dict[str, float] = {}
    for s in facts["sets"]:
        suffix = "" if s is main else f"_{s['name']}"
        o = s["overall"]
        for key, value in (
            ("cer", o.get("cer")),
            ("cer_low", (o.get("interval") or {}).get("low")),
            ("cer_high", (o.get("interval") or {}).get("high")),
            ("wer", (s.get("wer") or {}).get("wer")),
        ):
            if value is not None:  # HTRMoPo's metrics are numbers: an unknown one is left out, not 0
                metrics[f"{key}{suffix}"] = round(float(value), 6)
    if metrics:
        meta["metrics"] = metrics
    if release.data_url:
        meta["datasets"] = [release.data_url]
    if facts.get("base_model_url"):
        meta["base_model"] = [facts["base_model_url"]]
    meta["tags"] = ["hsbcala", facts["script"], "calamari", f"calamari{facts['calamari_version'][0]}"]
    return meta


def missing(release: Any) -> list[str]:
    """The ``release.*`` keys HTRMoPo needs (or a reader needs) that are not set."""
    out = []
    if not release.authors:
        out.append("release.authors")
    if not release.license:
        out.append("release.license")
    for key in ("data_url", "data_license", "description"):
        if not release.get(key):
            out.append(f"release.{key}")
    return out


def _table(rows: list[list[str]], head: list[str]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def body(release: Any, facts: dict) -> str:
    """The Markdown after the front matter: HTRMoPo's sections, filled with what the release knows."""
    lang = ", ".join(_LANGUAGE_NAMES.get(c, c) for c in release.language)
    t = facts["training"]
    out = [
        f"# {facts['name']}",
        "",
        release.summary or facts["default_summary"],
        "",
        release.description or f"Description: {_miss('description')}.",
        "",
        "## Architecture",
        "",
        f"Calamari {facts['calamari_version']} ({facts['version']}), network `{facts['network'] or 'n/a'}`, "
        f"{facts['charset_size']} characters in the codec. Files: "
        + ", ".join(f"`{f}`" for f in facts["model_files"])
        + ".",
        "",
        "## Uses",
        "",
        (
            f"Text line recognition of printed {lang} in {facts['script']} "
            f"(ISO 15924 `{facts['iso15924']}`), on line images as Calamari expects them."
        ),
        "",
        "## How to Get Started with the Model",
        "",
        "```bash",
        facts["predict_command"],
        (
            f"ocrd resmgr download ocrd-calamari-recognize {facts['name']}   # with {facts['name']}.ocrd-resources.yml "
            "in ~/.config/ocrd/resources.yml"
        ),
        "```",
        "",
        "## Training Details",
        "",
        "### Training Data",
        "",
    ]
    if t.get("manifest"):
        m = t["manifest"]
        out += _table(
            [
                [side, str(m[side].get("lines", "n/a")), str(m[side].get("documents", "n/a"))]
                for side in ("train", "val")
                if side in m
            ],
            ["split", "lines", "documents"],
        )
        out += [
            "",
            (
                f"Data hash (content, path-independent): `{t.get('content_sha256') or 'n/a'}`; "
                f"manifest.json SHA-256: `{t.get('manifest_sha256') or 'n/a'}`."
            ),
        ]
    else:
        out.append("Line and document counts: missing (the model directory has no manifest.json).")
    out += [
        "",
        f"Source: {release.data_url or _miss('data_url')}. Licence: {release.data_license or _miss('data_license')}.",
        "",
        "### Training Procedure and Hyperparameters",
        "",
    ]
    base = facts.get("base_model")
    if base:
        src = facts.get("base_model_url") or "no public source known"
        out.append(f"- warm start from `{base}` ({src})")
    else:
        out.append("- trained from scratch (no warm start recorded)")
    for key, value in facts["settings"].items():
        out.append(f"- `{key}`: {value if value not in (None, '') else 'n/a'}")
    out += ["", "## Evaluation", "", f"Text normalised as {facts['normalization']} before scoring.", ""]
    for s in facts["sets"]:
        o = s["overall"]
        out += [
            f"### Set `{s['name']}`",
            "",
            (
                f"CER {_pct(o.get('cer'))} {bounds_text(o.get('interval'))} "
                f"({o.get('errors')} errors / {o.get('chars')} GT characters, {o.get('lines')} lines; "
                f"{int(100 * facts['level'])} % bootstrap interval over {s.get('interval_unit', 'lines')})."
            ),
        ]
        w = s.get("wer")
        if w:
            out.append(f"WER {_pct(w.get('wer'))} {bounds_text(w.get('interval'))} ({w.get('words')} words).")
        groups = [
            [
                g,
                "n/a" if p is None else _pct(p.get("cer")),
                "" if p is None else bounds_text(p.get("interval")),
            ]
            for g, p in (s.get("groups") or {}).items()
        ]
        if groups:
            out += ["", *_table(groups, ["group", "CER", "interval"])]
        classes = [
            [k, _pct(v.get("cer")), _pct(v.get("recall"), 1), str(v.get("chars"))]
            for k, v in (s.get("classes") or {}).items()
            if v.get("chars") or v.get("errors")
        ]
        if classes:
            out += ["", *_table(classes, ["class", "CER", "recall", "GT chars"])]
        letters = [r for r in s.get("sorbian_letters") or [] if r.get("gt")]
        if letters:
            rows = [
                [
                    r["char"],
                    str(r["gt"]),
                    _pct(r.get("recall"), 1),
                    _pct(r.get("precision"), 1),
                    "" if r.get("misread") is None else f"`{r['misread']}` {r['misread_count']}×",
                ]
                for r in letters
            ]
            out += ["", *_table(rows, ["Sorbian letter", "GT", "recall", "precision", "most read as"])]
        out.append("")
    p = facts["provenance"]
    out += [
        "## Provenance",
        "",
        f"- hsbcala commit `{p['commit'] or 'unknown'}`"
        + (" (working tree DIRTY: uncommitted changes)" if p["dirty"] else " (clean working tree)"),
        f"- MLflow: {p['mlflow'] or 'n/a'}",
        f"- engine packages: `{p['freeze_file']}` in this folder"
        if p.get("freeze_file")
        else "- engine packages: n/a",
        f"- environment modules: `{p['modules_file']}`"
        if p.get("modules_file")
        else "- environment modules: none",
        "",
        "## Citation",
        "",
        (
            f"Authors: {', '.join(a.name for a in release.authors) or _miss('authors')}. "
            f"Licence: {release.license or _miss('license')}."
        ),
        "",
    ]
    return "\n".join(out)


def render(release: Any, facts: dict) -> str:
    """The card: ``---`` + YAML front matter + ``---`` + Markdown (HTRMoPo's layout)."""
    import yaml  # PyYAML: declared in pyproject (also an mlflow dependency)

    header = yaml.safe_dump(front_matter(release, facts), allow_unicode=True, sort_keys=False)
    return f"---\n{header}---\n{body(release, facts)}"
