"""Command building per script x version x cluster, diffed against recorded golden files.

Regenerate on purpose (after a deliberate change of a command line) with:
    HSBCALA_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_commands.py
and review the diff of tests/golden/ before committing it. A test whose file it rewrote fails (so a run that
regenerates can never pass, in CI or anywhere); run again without the variable to see them pass.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from pathlib import Path

import pytest

from hsbcala import engines
from hsbcala.engines import envs
from hsbcala.train.plan import command
from tests.conftest import ROOT, compose_cfg

GOLDEN = Path(__file__).parent / "golden"
COMBOS = list(itertools.product(("fraktur", "antiqua"), ("cala1", "cala2"), ("local", "zih_power9")))


def build(overrides: list[str], **inputs) -> list[str]:
    cfg = compose_cfg(overrides, hydra_node=True)
    model_dir = Path(cfg.model_dir)
    defaults = {
        "model_dir": model_dir,
        "train": tuple(cfg.data.train),
        "val": tuple(cfg.data.val),
        "n_train": 1000,
        "gpus": cfg.cluster.gpus,
        "on_ramdisk": cfg.cluster.ramdisk is not None,
    }
    if cfg.warmstart.model:
        warm = cfg.warmstart.model
        defaults.update(
            warmstart=warm if cfg.version.name == "cala2" else warm.removesuffix(".json"),
            network="deep3" if cfg.version.name == "cala2" else "cnn=40:3x3,pool=2x2,lstm=200",
        )
    else:
        defaults["network"] = cfg.train.network
    defaults.update(inputs)
    argv, _ = command(cfg, engines.TrainInputs(**defaults), envs.resolve(cfg, ROOT))
    return argv


def normalise(argv: list[str]) -> str:
    text = shlex.join(argv)
    for path, name in (
        (str(envs.resolve(compose_cfg(), ROOT).prefix.parent), "$ENVS"),
        (str(ROOT), "$ROOT"),
        (str(Path.home()), "$HOME"),
    ):
        text = text.replace(path, name)
    return re.sub(r"\$ENVS/(cala[12])-[0-9a-f]{12}", r"$ENVS/\1-<lock hash>", text) + "\n"


def compare_golden(path: Path, text: str, what: str) -> None:
    """``text`` against the recorded golden file ``path``. Only ``HSBCALA_REGEN_GOLDEN=1`` regenerates (``0`` or
    unset compares; any other value is refused, not guessed at): a file that differs is rewritten and the test
    still fails, naming it, so that regenerating can never turn a changed command into a passing run."""
    regen = os.environ.get("HSBCALA_REGEN_GOLDEN", "")
    if regen not in ("", "0", "1"):
        pytest.fail(f"HSBCALA_REGEN_GOLDEN={regen!r}: set it to 1 to regenerate, or unset it", pytrace=False)
    recorded = path.read_text() if path.exists() else None
    if text == recorded:
        return
    if regen == "1":
        path.write_text(text)
        pytest.fail(
            f"{what} regenerated: {path}; review `git diff {GOLDEN}` and run again without HSBCALA_REGEN_GOLDEN",
            pytrace=False,
        )
    assert recorded is not None, f"no golden file {path}; create it with HSBCALA_REGEN_GOLDEN=1"
    assert text == recorded, f"{what} changed; if on purpose, regenerate with HSBCALA_REGEN_GOLDEN=1 ({path})"


def check_golden(name: str, argv: list[str]) -> None:
    compare_golden(GOLDEN / f"{name}.txt", normalise(argv), "command")


@pytest.mark.parametrize("script,version,cluster", COMBOS)
def test_command_matches_golden(script, version, cluster):
    check_golden(
        f"{script}-{version}-{cluster}",
        build([f"script={script}", f"version={version}", f"cluster={cluster}"]),
    )


@pytest.mark.parametrize("version", ["cala1", "cala2"])
def test_resume_command_matches_golden(version):
    ckpt = (
        Path("/m/checkpoint/checkpoint_0003/trainer_params.json")
        if version == "cala2"
        else Path("/m/model_00000040.ckpt")
    )
    check_golden(f"resume-{version}", build([f"version={version}"], resume_from=ckpt))


ORIGINAL_FLAGS = {
    # flag -> value (None: flag only) in the team's original ZIH scripts
    "cala2": {
        "--train.batch_size": "64",
        "--train.num_processes": "10",
        "--train.prefetch": "128",
        "--train.preload": "False",
        "--val.preload": "False",
        "--codec.keep_loaded": "False",
        "--n_augmentations": "5",
        "--early_stopping.n_to_go": "10",
        "--trainer.random_seed": "50",
        "--trainer.epochs": "500",
        "--device.dist_strategy": "mirror",
        "--data.skip_invalid_gt": "True",
        "--warmstart.model": None,
        "--network": "deep3",
        "--trainer.output_dir": None,
        "--train.images": None,
        "--val.images": None,
    },
    "cala1": {
        "--batch_size": "80",
        "--num_threads": "10",
        "--n_augmentations": "5",
        "--early_stopping_nbest": "10",
        "--seed": "50",
        "--max_iters": "5000000",
        "--train_data_on_the_fly": None,
        "--validation_data_on_the_fly": None,
        "--weights": None,
        "--network": None,
        "--output_dir": None,
        "--files": None,
        "--validation": None,
    },
}


@pytest.mark.parametrize(
    "script,version", list(itertools.product(("fraktur", "antiqua"), ("cala1", "cala2")))
)
def test_zih_power9_has_every_original_flag(script, version):
    argv = build([f"script={script}", f"version={version}", "cluster=zih_power9"])
    assert argv[:2] == ["bash", "-lc"] and "module load modenv/ml" in argv[2]
    # the site venv's Python checks the node's GPUs first (engines/engine_start.py), then runs the engine
    gpus = "4" if version == "cala2" else "1"
    assert argv[4].endswith(f"/venvs/hsbcala-{version}/bin/python")
    assert argv[6:9] == ["--expect-gpus", gpus, "--"]
    if (
        version == "cala1"
    ):  # then the same Python writes Calamari 1's .h5 files whole (engines/cala1_start.py)
        assert argv[9].endswith("/venvs/hsbcala-cala1/bin/python") and argv[10].endswith("/cala1_start.py")
        argv = argv[:9] + argv[11:]
    assert argv[9].endswith(f"/venvs/hsbcala-{version}/bin/calamari-train")
    for flag, value in ORIGINAL_FLAGS[version].items():
        assert flag in argv, flag
        if value is not None:
            assert argv[argv.index(flag) + 1] == value, flag
    pretrained = {
        ("fraktur", "cala2"): "deep3_fraktur19/0.ckpt.json",
        ("antiqua", "cala2"): "deep3_lsh4/0.ckpt.json",
        ("fraktur", "cala1"): "fraktur_19th_century/0.ckpt",
        ("antiqua", "cala1"): "antiqua_historical/0.ckpt",
    }
    flag = "--warmstart.model" if version == "cala2" else "--weights"
    assert argv[argv.index(flag) + 1].endswith(pretrained[(script, version)])
    if version == "cala2":
        assert argv[argv.index("--device.gpus") + 1 : argv.index("--device.gpus") + 5] == ["0", "1", "2", "3"]


def test_cala1_iterations_are_derived_from_epochs():
    argv = build(
        ["version=cala1", "train.epochs=3", "train.batch_size=10", "train.samples_per_epoch=null"], n_train=95
    )
    assert argv[argv.index("--max_iters") + 1] == str(3 * 10)  # 3 epochs x ceil(95 / 10)
    assert argv[argv.index("--early_stopping_frequency") + 1] == "10"
    assert argv[argv.index("--checkpoint_frequency") + 1] == "10"


def test_learning_rate_reaches_both_engines():
    """train.learning_rate: Calamari 2's --learning_rate.lr; Calamari 1 takes it inside the network string (of the
    warm-start model, or its own default network when none is given); unset, neither command names it."""
    two = build(["version=cala2", "train.learning_rate=0.002"])
    assert two[two.index("--learning_rate.lr") + 1] == "0.002"
    one = build(["version=cala1", "train.learning_rate=0.002", "train.network=null"], network=None)
    assert (
        one[one.index("--network") + 1]
        == "cnn=40:3x3,pool=2x2,cnn=60:3x3,pool=2x2,lstm=200,dropout=0.5,learning_rate=0.002"
    )
    warm = build(
        ["version=cala1", "preset=full", "data.train=[x]", "data.val=[y]", "train.learning_rate=0.0005"]
    )
    assert warm[warm.index("--network") + 1] == "cnn=40:3x3,pool=2x2,lstm=200,learning_rate=0.0005"
    for version in ("cala1", "cala2"):
        assert "learning_rate" not in " ".join(build([f"version={version}", "train.learning_rate=null"]))


def test_nsys_wraps_the_engine_when_present(tmp_path, monkeypatch):
    fake = (
        tmp_path / "nsys"
    )  # a stand-in executable on PATH, only to test the wrapping (nsys is not installed)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cfg = compose_cfg(["profiler=nsys"])
    inputs = engines.TrainInputs(model_dir=Path("/m"), train=("a",), val=("b",), n_train=10)
    argv, report = command(cfg, inputs, envs.resolve(cfg, ROOT))
    assert argv[:6] == ["nsys", "profile", "--force-overwrite", "true", "-o", "/m/profile"]
    assert argv[6].endswith("/bin/calamari-train") and report == Path("/m/profile.nsys-rep")
