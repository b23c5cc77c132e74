"""hsbcala's wings import only downwards, and no two modules import each other, even lazily (issue 21).

The order is the one ``docs/ARCHITECTURE.md`` draws: a wing may import the wings before it in :data:`ORDER`
and itself, never one after it. Imports inside functions and under ``TYPE_CHECKING`` count too: a lazy import
hides a circle from Python, not from a reader. Read from the source with :mod:`ast` (no import-linter: one
small table here says the same and needs no extra tool in CI).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hsbcala"

ORDER = [
    "core",  # messages, errors, atomic files and locks, masking, the CLI's one-line errors
    "engines",  # the Calamari versions, their environments and processes
    "modeldir",  # one model directory's paths, state and lock (through its engine)
    "data",  # resolve, checks, split, manifest, codec report, synthetic lines
    "pretrained",  # the registry and fetching of pretrained models
    "config",  # the schema every entry point composes, sweep-point names, the generated reference
    "track",  # every MLflow call
    "evaluate",  # prediction, CER, intervals, reports, baseline, checkpoints, release
    "slurm",  # the job side and the login-node side of a Slurm submission, status
    "train",  # plan and run of a training
]

# Deliberate upward imports, each with its reason. Keep this list short.
ALLOWED = {
    # `python -m hsbcala.engines.envs` builds and checks an engine env for a composed config (its version
    # and env nodes): a command, not a library function; nothing in the engines imports it
    ("hsbcala.engines.envs", "hsbcala.config.schema"),
}


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Every hsbcala module ``path`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("hsbcala.") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def test_every_module_belongs_to_a_wing():
    strays = sorted(m for m in modules() if m != "hsbcala" and wing(m) not in ORDER)
    assert not strays, f"modules outside the wings of {ORDER}: {strays}"


def test_wings_import_only_downwards():
    rank = {w: i for i, w in enumerate(ORDER)}
    upward = sorted(
        f"{src} -> {dst}"
        for src, targets in graph().items()
        for dst in targets
        if src != "hsbcala" and rank[wing(dst)] > rank[wing(src)] and (src, dst) not in ALLOWED
    )
    assert not upward, "a wing imports one above it:\n" + "\n".join(upward)


def test_no_import_circle_between_modules():
    g = graph()
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_mlflow_is_imported_in_the_track_wing_only():
    """All MLflow in one place: ``import mlflow`` / ``from mlflow…`` (lazy ones too) only under hsbcala/track/,
    and at the entry points and the Slurm launcher plugin not at all."""
    roots = [
        PACKAGE,
        PACKAGE.parent / "hydra_plugins",
        PACKAGE.parent / "train.py",
        PACKAGE.parent / "evaluate.py",
    ]
    files = [p for r in roots for p in ([r] if r.is_file() else r.rglob("*.py"))]
    outside = []
    for path in files:
        if path.is_relative_to(PACKAGE / "track"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            outside += [
                f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                for n in names
                if n.split(".")[0] == "mlflow"
            ]
    assert not outside, f"mlflow imported outside hsbcala/track/: {outside}"
