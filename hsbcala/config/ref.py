"""The configuration reference (``docs/configuration.md``), generated from the schema and ``conf/``:

    .venv/bin/python -m hsbcala.config.ref > docs/configuration.md

One source, no drift: every key of :class:`hsbcala.config.schema.Config` (and its nodes) with its type, its default
and its documentation as written in ``hsbcala/config/schema.py`` (the trailing ``# …`` comments, the comment lines
just above a field, the class docstrings), the choices of every enumeration, and which group option of
``conf/`` (or ``conf/evaluate.yaml``) sets the key to something else. ``tests/test_docs.py`` regenerates the
page and fails when the committed one differs, so a schema change without a regenerated page fails the tests.

Why the source text and not only the classes: a dataclass keeps its fields' names, types and defaults, but
comments are not part of Python's syntax tree. :mod:`tokenize` yields them with their line numbers and
:mod:`ast` the lines each field spans (a wrapped default, as ``ruff format`` writes it, carries its comment
inside the parentheses), so a field's documentation is the comments within its lines plus the comment block
directly above it. The values themselves come from the dataclasses (``dataclasses.fields``), never from
parsing text.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import io
import json
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from hsbcala.config import schema

ROOT = Path(__file__).resolve().parents[2]  # the repository: hsbcala/config/ref.py
CONF = ROOT / "conf"
GROUPS = ("script", "version", "preset", "cluster", "profiler")  # conf/config.yaml's defaults list, in order
COMMAND = ".venv/bin/python -m hsbcala.config.ref > docs/configuration.md"


@dataclasses.dataclass
class SourceDocs:
    """What the schema's source says about its classes: docstrings, and each field's (or member's) comments."""

    classes: dict[str, str]  # class name -> docstring
    fields: dict[tuple[str, str], str]  # (class name, field or member name) -> its comments, joined
    annotations: dict[tuple[str, str], str]  # (class name, field name) -> the annotation as written


def read_source(path: Path) -> SourceDocs:
    """Docstrings and comments of every class in ``path`` (see the module docstring for why both modules)."""
    text = path.read_text(encoding="utf-8")
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()  # lines with a token other than a comment
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    classes, fields, annotations = {}, {}, {}
    for node in ast.parse(text).body:
        if not isinstance(node, ast.ClassDef):
            continue
        classes[node.name] = ast.get_docstring(node) or ""
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                name = item.target.id
                annotations[(node.name, name)] = ast.unparse(item.annotation)
            elif (
                isinstance(item, ast.Assign)
                and len(item.targets) == 1
                and isinstance(item.targets[0], ast.Name)
            ):
                name = item.targets[0].id  # an enumeration member
            else:
                continue
            above = []
            line = item.lineno - 1
            while line in comments and line not in code_lines:  # the comment block directly above
                above.insert(0, comments[line])
                line -= 1
            inside = [comments[n] for n in range(item.lineno, item.end_lineno + 1) if n in comments]
            # a type checker's pragma is not documentation ("# type: ignore[…]  # an interpolation …")
            inside = [re.sub(r"^type: ignore(\[[^\]]*\])?\s*#?\s*", "", c) for c in inside]
            fields[(node.name, name)] = " ".join(c for c in above + inside if c)
    return SourceDocs(classes, fields, annotations)


def _value(v: Any) -> str:
    """A default as YAML writes it (null, true, lists in brackets)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, enum.Enum):
        return str(v.value)
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False).replace('"', "")
    return str(v)


def _cell(text: str) -> str:
    """Markdown table cell: a '|' would end the cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _node_type(tp: Any) -> type | None:
    """The dataclass a field holds (also ``X | None``), or None for a leaf."""
    for t in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(t):
            return t  # type: ignore[return-value]
    return None


def _enum_type(tp: Any) -> type[enum.Enum] | None:
    for t in (tp, *typing.get_args(tp)):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return t
    return None


@dataclasses.dataclass
class Key:
    path: str
    cls: str  # the dataclass the key belongs to
    type: str
    default: str
    doc: str
    choices: str


@dataclasses.dataclass
class Section:
    path: str  # '' for the root
    cls: type
    keys: list[Key]


def walk(cls: type = schema.Config, prefix: str = "") -> list[Section]:
    """The sections of the config, depth-first: each dataclass node with its leaf keys."""
    src = read_source(Path(schema.__file__))
    hints = typing.get_type_hints(cls)
    keys, below = [], []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        node = _node_type(tp)
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        if node is not None:  # a node: its own section (null by default for eval and cluster.env)
            below += walk(node, path + ".")
            if default is MISSING or default is None:
                text = "??? (a group option)" if default is MISSING else "null"
                doc = (
                    src.fields.get((cls.__name__, f.name))
                    or src.classes.get(node.__name__, "").split("\n")[0]
                )
                keys.append(Key(path, cls.__name__, node.__name__, text, doc, ""))
            continue
        en = _enum_type(tp)
        choices = ""
        if en is not None:
            choices = "; ".join(
                m.value
                + (f": {src.fields[(en.__name__, m.name)]}" if src.fields.get((en.__name__, m.name)) else "")
                for m in en
            )
        text = "??? (a group option)" if default == MISSING else _value(default)
        keys.append(
            Key(
                path,
                cls.__name__,
                src.annotations.get((cls.__name__, f.name), str(tp)),
                text,
                src.fields.get((cls.__name__, f.name), ""),
                choices,
            )
        )
    return [Section(prefix.rstrip("."), cls, keys), *below]


# ---- conf/: the group options and what each sets
@dataclasses.dataclass
class Option:
    group: str
    name: str
    about: str  # the file's first comment line
    forces: list[str]  # other groups' options it overrides (defaults: - override /preset: full)
    values: dict[str, Any]  # schema key -> value it sets


def _is_global(text: str) -> bool:
    return any(line.strip() == "# @package _global_" for line in text.splitlines()[:3])


def _about(text: str, values: dict[str, Any]) -> str:
    """The first sentence of the file's leading comment; without one, the values that identify the option."""
    block = []
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("#"):
            break
        if "@package" not in s:
            block.append(s.lstrip("#").strip())
    about = " ".join(block)
    m = re.match(r"(.+?\.)(\s|$)", about)  # its first sentence
    if m:
        about = m.group(1)
    if not about:
        about = ", ".join(
            f"{k.split('.')[-1]}: {_short(v)}" for k, v in list(values.items())[:2] if v is not None
        )
    return about


def _flatten(d: dict, prefix: str, leaves: set[str], nodes: set[str], out: dict[str, Any]) -> None:
    """Schema key -> value of a YAML mapping; a dict-typed key (e.g. cluster.gpus_per_version) stays whole."""
    for k, v in d.items():
        path = f"{prefix}{k}"
        if path in nodes and isinstance(v, dict):
            _flatten(v, path + ".", leaves, nodes, out)
        else:
            out[path] = v


def options(sections: list[Section]) -> list[Option]:
    import yaml

    leaves = {k.path for s in sections for k in s.keys}
    nodes = {s.path for s in sections if s.path}
    out = []
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            body = yaml.safe_load(text) or {}
            forces = []  # "- override /preset: full" is a one-key mapping in YAML
            for d in body.pop("defaults", None) or []:
                for k, v in d.items() if isinstance(d, dict) else []:
                    if k.startswith("override /") and not k.startswith("override /hydra"):
                        forces.append(f"{k.split('/')[-1]}={v}")
            body.pop("hydra", None)
            values: dict[str, Any] = {}
            if _is_global(text):
                _flatten(body, "", leaves, nodes, values)
            else:
                _flatten(body, f"{group}.", leaves, nodes, values)
            out.append(Option(group, path.stem, _about(text, values), forces, values))
    return out


def _defaults() -> dict[str, str]:
    """The default option of each group (conf/config.yaml's defaults list)."""
    import yaml

    out = {}
    for d in yaml.safe_load((CONF / "config.yaml").read_text(encoding="utf-8"))["defaults"]:
        if isinstance(d, dict):
            out.update({k: str(v) for k, v in d.items()})
    return out


def _eval_values(leaves: set[str], nodes: set[str]) -> dict[str, Any]:
    """What conf/evaluate.yaml sets in the eval node (its groups, say)."""
    import yaml

    body = yaml.safe_load((CONF / "evaluate.yaml").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    _flatten({"eval": body.get("eval") or {}}, "", leaves, nodes, out)
    return out


def _short(v: Any) -> str:
    text = _value(v)
    return text if len(text) <= 80 else text[:77] + "…"


def render() -> str:
    """The whole page, as Markdown."""
    sections = walk()
    opts = options(sections)
    leaves = {k.path for s in sections for k in s.keys}
    nodes = {s.path for s in sections if s.path}
    defaults = _defaults()
    evaluate_yaml = _eval_values(leaves, nodes)
    set_by: dict[str, list[str]] = {}
    for o in opts:
        for key, v in o.values.items():
            if key in ("preset",) or key.endswith(".name") and key.split(".")[0] == o.group:
                continue  # an option naming itself
            set_by.setdefault(key, []).append(f"{o.group}={o.name}: {_short(v)}")
    for key, v in evaluate_yaml.items():
        if _value(v) != next((k.default for s in sections for k in s.keys if k.path == key), None):
            set_by.setdefault(key, []).append(f"evaluate.yaml: {_short(v)}")

    lines = [
        "<!-- Generated by hsbcala/config/ref.py from hsbcala/config/schema.py and conf/: do not edit by hand.",
        f"     Regenerate: {COMMAND}   (tests/test_docs.py fails when this page is stale) -->",
        "",
        "# Configuration reference",
        "",
        "Every key of the composed config, with its type, the schema's default, what a group option sets it to,",
        "and what it means, as `hsbcala/config/schema.py` documents it. Set a key on the command line",
        "(`python train.py train.batch_size=16`), choose a group option (`preset=full`), or see the whole composed",
        "config with your overrides: `python train.py --cfg job [overrides]`. A key that is not here, or a value",
        "of the wrong type, fails while composing with one line naming it.",
        "",
        "## Groups",
        "",
        "The options of each group are the files `conf/<group>/<option>.yaml`; **bold** is the default.",
        "",
        "| group | option | what it is | also chooses |",
        "|---|---|---|---|",
    ]
    for o in opts:
        name = f"**`{o.name}`**" if defaults.get(o.group) == o.name else f"`{o.name}`"
        lines.append(
            f"| `{o.group}` | {name} | {_cell(o.about)} | {_cell(', '.join(f'`{f}`' for f in o.forces))} |"
        )
    lines += [
        "",
        "`python evaluate.py` composes the same groups (`conf/evaluate.yaml` starts from `conf/config.yaml`) and",
        "adds the `eval` node.",
        "",
        "## Keys",
        "",
        "Enumerations list their choices; a value outside them fails while composing. `???`: set by the group",
        "option chosen. *set by* lists the group options (and `conf/evaluate.yaml`) that change the default.",
    ]
    for s in sections:
        if not s.keys:
            continue
        title = s.path or "top level"
        lines += ["", f"### `{title}`" if s.path else f"### {title}", ""]
        doc = read_source(Path(schema.__file__)).classes.get(s.cls.__name__, "")
        if doc:
            lines += [" ".join(doc.split()), ""]
        lines += ["| key | type | default | set by | meaning |", "|---|---|---|---|---|"]
        for k in s.keys:
            meaning = k.doc
            if k.choices:
                meaning = f"{meaning} Choices: {k.choices}." if meaning else f"Choices: {k.choices}."
            by = "; ".join(f"`{x}`" for x in set_by.get(k.path, []))
            lines.append(
                f"| `{k.path}` | {_cell(_code(k.type))} | {_cell(_code(k.default))} | {_cell(by)} | {_cell(meaning)} |"
            )
    lines += [
        "",
        "Interpolations such as `${paths.root}` resolve when the config is used; `${oc.env:NAME,default}` reads",
        "an environment variable; `${cwd:}` is the directory `train.py` runs in. Hydra's own keys (`hydra.*`,",
        "for a Slurm cluster `hydra.launcher.*` of hydra-submitit-launcher 1.2.0) are in [clusters.md](clusters.md)",
        "and `python train.py --hydra-help`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
