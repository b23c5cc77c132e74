"""The user guide stays true to the code: the generated configuration reference is current, every relative link
in README.md and docs/ leads to a file, and what ``--help`` lists exists in conf/. Quick: no training, no engine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# [text](target) and [text]: target; images too. Not inside code spans (a glob such as `[a](b)` is not a link).
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def test_configuration_reference_is_current():
    """docs/configuration.md is what hsbcala.config.ref writes from hsbcala/config/schema.py and conf/ now."""
    from hsbcala.config import ref as configref

    page = DOCS / "configuration.md"
    assert page.is_file(), f"docs/configuration.md missing; write it: {configref.COMMAND}"
    assert page.read_text(encoding="utf-8") == configref.render(), (
        f"docs/configuration.md is stale (hsbcala/config/schema.py or conf/ changed); regenerate it: {configref.COMMAND}"
    )


def test_configuration_reference_has_every_key():
    """Every leaf of the composed schema is on the page, with its enum choices (a walk that skipped a node would
    still be 'current')."""
    import dataclasses

    from hsbcala.config import schema

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")

    def leaves(cls, prefix=""):
        import typing

        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            node = next(
                (t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)),
                None,
            )
            yield from leaves(node, f"{prefix}{f.name}.") if node else [f"{prefix}{f.name}"]

    missing = [k for k in leaves(schema.Config) if f"| `{k}` |" not in text]
    assert not missing, f"keys missing from docs/configuration.md: {missing}"
    assert "Choices: best; all." in text and "Choices: fail; warn; drop." in text  # enumerations


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files(page):
    """Every relative link of README.md and docs/*.md names an existing file or directory (anchors and web
    addresses are not checked: they need the network or a Markdown renderer's idea of a heading's id)."""
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # https:, mailto:, an anchor on the same page
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_readme_links_every_docs_page():
    """One hop from the README: each page of the guide is linked from it."""
    linked = {(ROOT / t.split("#")[0]).resolve() for t in _links(ROOT / "README.md")}
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_readme_keeps_the_two_commands():
    """The contract: CI (.ci/run) runs the second command, scripts/fresh-debian.sh proves the first."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash setup.sh && .venv/bin/python train.py" in text
    assert "bash setup.sh --test && .venv/bin/python -m pytest" in text
    assert "bash setup.sh --test && .venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()
    assert len(text.splitlines()) <= 200, "README.md is over 200 lines: move the detail into docs/"


def _help(script: str) -> str:
    out = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout


def _section(text: str, title: str) -> list[str]:
    """The lines of one '== title … ==' section of --help, a continuation line (indented) joined to its line."""
    body = text.split(f"== {title}")[1].split("\n", 1)[1].split("\n== ")[0].split("\n\n")[0]
    lines: list[str] = []
    for line in body.splitlines():
        if line[:1].isspace() and lines:
            lines[-1] += " " + line.strip()
        elif line.strip():
            lines.append(line)
    return lines


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_help_points_to_the_reference(script):
    assert "docs/configuration.md" in _help(script)


def test_help_lists_every_group_option():
    """Every group option train.py --help lists is a file in conf/, and every file of a group is listed."""
    listed = {}
    for line in _section(_help("train.py"), "Groups"):
        group, options = line.split(None, 1)
        listed[group] = set(re.findall(r"(?:^|\| )(\w+)", options))
    for group in ("script", "version", "preset", "cluster", "profiler"):
        files = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
        assert listed.get(group) == files, (
            f"--help lists {group} options {listed.get(group)}, conf/ has {files}"
        )


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_help_keys_exist(script):
    """Each key of --help's 'Main keys' is a key (or a node) of docs/configuration.md."""
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    keys = set()
    body = _help(script).split("== Main keys")[1].split("\n", 1)[1].split("\n\n")[0]
    for line in body.splitlines():
        if line[:1].isspace():
            continue  # a meaning's continuation
        left = re.split(r"\s{2,}", line)[0]  # the key column; the meaning follows after two spaces
        left = re.sub(r"\([^)]*\)", "", left)  # "(default: binarized, raw)" names no keys
        keys.update(re.findall(r"(?:^|,\s*)\+?([a-z_]+(?:\.[a-zA-Z_*]+)*)", left))
    keys = {k.removesuffix(".NAME").removesuffix(".*") for k in keys if not k.startswith("hydra.")}
    assert {"data.train", "eval.data"} & keys, keys
    unknown = [k for k in sorted(keys) if f"| `{k}` |" not in reference and f"### `{k}`" not in reference]
    assert not unknown, f"{script} --help names keys docs/configuration.md lacks: {unknown}"
