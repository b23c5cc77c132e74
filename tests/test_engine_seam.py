"""Only ``hsbcala/engines/`` knows the Calamari versions, and only its runner starts engine commands (issue 19,
items 10 and 7).

The seam promises "a third version is one more module": no module outside ``engines/`` may branch on a version
name or major number or know where a version keeps a model's weights. Checked two ways: the grep the issue names
(hits allowed only where they name config or registry values, each with its reason), and the code itself (AST:
version names and ``.h5`` in code, comparisons with a major version). The warm-start preparation of
``train.new_chars_init=base`` runs through the one runner (own session, Slurm's USR signals ignored, a time limit).
"""

from __future__ import annotations

import ast
import signal
import subprocess
from pathlib import Path

import pytest

from hsbcala import engines
from hsbcala.core.errors import EngineError
from hsbcala.train import newchars
from tests.conftest import ROOT, compose_cfg

PACKAGE = ROOT / "hsbcala"
# grep hits outside engines/ that name config or registry values, not a version rule (file, text): why
ALLOWED = {
    (
        "hsbcala/config/schema.py",
        "name: str = MISSING  # cala1 | cala2",
    ): "the config key's values, in a comment",
    (
        "hsbcala/config/schema.py",
        "(e.g. zih_power9: 4 GPUs for cala2, 1 for cala1)",
    ): "a site config's example",
    (
        "hsbcala/pretrained/registry.py",
        "# the engine that loads it: cala1 | cala2",
    ): "the registry field's values",
    ("hsbcala/slurm/launch.py", "``fraktur-cala2-sweep``"): "an example of a sweep's job name",
    ("hsbcala/slurm/launch.py", "``fraktur-cala2-batch_size=8``"): "an example of a sweep's job name",
}


def test_grep_finds_no_version_outside_engines():
    out = subprocess.run(
        ["grep", "-rn", r"cala1\|cala2", "hsbcala", "--include=*.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    hits = [x for x in out.splitlines() if not x.startswith("hsbcala/engines/")]
    unexplained = [x for x in hits if not any(x.startswith(f + ":") and t in x for f, t in ALLOWED)]
    assert not unexplained, (
        "version knowledge outside hsbcala/engines/ (move it behind Engine):\n" + "\n".join(unexplained)
    )


def _code_strings_and_compares(tree: ast.AST):
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield "string", node
        elif isinstance(node, ast.Compare):
            yield "compare", node


def test_no_version_rule_in_the_code_outside_engines():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "engines" in path.relative_to(PACKAGE).parts:
            continue
        for kind, node in _code_strings_and_compares(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if kind == "string" and (node.value in engines.NAMES or ".h5" in node.value):
                found.append(f"{where}: {node.value!r}")  # a version's name or its weights file in code
            elif kind == "compare":
                names = [ast.unparse(x) for x in (node.left, *node.comparators)]
                consts = [x.value for x in (node.left, *node.comparators) if isinstance(x, ast.Constant)]
                if any(n.endswith("major") for n in names) and any(isinstance(c, int) for c in consts):
                    found.append(f"{where}: {ast.unparse(node)}")  # a branch on Calamari's major version
    assert not found, "version rules outside hsbcala/engines/:\n" + "\n".join(found)


def test_each_engine_answers_the_rules_that_moved(tmp_path):
    cala1, cala2 = engines.get("cala1"), engines.get("cala2")
    model = tmp_path / "m.ckpt.json"
    model.write_text("{}")
    assert cala1.weights_of(model) == cala2.weights_of(model) == engines.weights_of(model) == []
    (tmp_path / "m.ckpt").mkdir()  # a Calamari 2.3 SavedModel
    assert cala2.weights_of(model) == [tmp_path / "m.ckpt"] and cala1.weights_of(model) == []
    assert "expected the SavedModel" in cala2.check_weights(model, 6)
    assert cala1.check_weights(model, 1) == f"expected {tmp_path / 'm.ckpt.h5'}"
    train = compose_cfg(["train.early_stopping_patience=1"]).train
    assert "n_to_go > 1" in cala2.check_train(train) and "--early_stopping_nbest 1" in cala1.check_train(
        train
    )
    assert cala1.position == "iteration" and cala2.position == "epoch"


# ------------------------------------------------------------------------------------------------ item 7


def _engine_python() -> str:
    from hsbcala.engines import envs

    env = envs.resolve(compose_cfg(["version=cala2", "version.env.device=cpu"]), ROOT)
    if not env.ready:
        pytest.fail(f"the cala2 engine env {env.prefix} is not built (bash setup.sh)")
    return env.program("python")


def test_new_chars_preparation_runs_through_the_engine_runner(tmp_path):
    """Own session and USR1/USR2 ignored (seen by the process itself, in /proc), output in the log beside the
    copy, and a failure that carries the script's own words."""
    seen = tmp_path / "seen"

    def wrap(argv):  # records what the engine process is given, then becomes it (exec: same process)
        script = f'grep -E "^SigIgn" /proc/$$/status > {seen}; ps -o sid= -p $$ >> {seen}; echo $$ >> {seen}; exec "$@"'
        return ["sh", "-c", script, "sh", *argv]

    copy = tmp_path / "warmstart.part"
    copy.mkdir()
    model = copy / "0.ckpt.json"
    model.write_text('{"not": "a model"}')
    with pytest.raises(EngineError) as err:
        newchars.prepare(_engine_python(), 2, model, [newchars.Origin("ě", "e", "decomposition")], wrap)
    ignored, sid, pid = seen.read_text().split("\n")[:3]
    mask = int(ignored.split()[1], 16)
    assert mask & (1 << (signal.SIGUSR1 - 1)) and mask & (1 << (signal.SIGUSR2 - 1))
    assert int(sid) == int(pid)  # its own session: a Ctrl-C in the terminal reaches the launcher only
    log = copy / newchars.PREPARE_LOG
    assert str(log) in str(err.value) and "unsupported model JSON" in str(err.value)
    assert "unsupported model JSON" in log.read_text()


def test_new_chars_preparation_that_hangs_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(newchars, "PREPARE_TIMEOUT_S", 1.0)
    model = tmp_path / "0.ckpt.json"
    model.write_text("{}")
    with pytest.raises(EngineError, match=r"did not end within 1 s"):
        newchars.prepare("python3", 2, model, [], lambda argv: ["sleep", "60"])


def test_no_bare_subprocess_runs_an_engine_python_outside_the_runner():
    """The engine env's interpreter and scripts run through engines/process.py only."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if ("PREPARE_SCRIPT" in text or "EXPORT_SCRIPT" in text) and "subprocess.run(" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
    assert Path(newchars.__file__).read_text(encoding="utf-8").count("EngineProcess(") == 1
