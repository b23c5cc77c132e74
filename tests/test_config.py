"""Every script x version x cluster composes and validates; bad keys and options fail with one clear line."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from hsbcala.config import schema
from hsbcala.core.errors import ConfigError
from tests.conftest import ROOT, compose_cfg, run_inprocess

SCRIPTS, VERSIONS, CLUSTERS = ("fraktur", "antiqua"), ("cala1", "cala2"), ("local", "zih_power9")


@pytest.mark.parametrize("script,version,cluster", list(itertools.product(SCRIPTS, VERSIONS, CLUSTERS)))
def test_every_combination_composes(script, version, cluster):
    cfg = compose_cfg([f"script={script}", f"version={version}", f"cluster={cluster}"], hydra_node=True)
    schema.check(cfg)
    assert cfg.version.name == version and cfg.script.name == script and cfg.cluster.name == cluster
    assert cfg.train.seed == 50 and cfg.train.codec == "recompute"
    stem = {"fraktur": "hsbfraktur", "antiqua": "hsblatin"}[script]
    demo = ".demo" if cfg.preset == "demo" else ""  # the demo never shares the real model's directory
    assert cfg.model_dir.endswith(f"/models/{stem}.{version}{demo}")


@pytest.mark.parametrize(
    "version,batch,epochs,iterations", [("cala2", 64, 500, None), ("cala1", 80, 500, 5_000_000)]
)
def test_full_preset_has_the_original_settings(version, batch, epochs, iterations):
    cfg = compose_cfg([f"version={version}", "preset=full", "data.train=[x]", "data.val=[y]"])
    t = cfg.train
    assert (t.batch_size, t.epochs, t.iterations) == (batch, epochs, iterations)
    assert (t.augmentations, t.early_stopping_patience, t.seed, t.workers, t.skip_invalid) == (
        5,
        10,
        50,
        10,
        True,
    )
    pretrained = {"cala2": "deep3_fraktur19", "cala1": "fraktur_19th_century"}[version]
    assert cfg.warmstart.model.endswith(f"/pretrained/{pretrained}/0.ckpt.json")


def test_antiqua_warm_starts_from_its_own_models():
    for version, name in (("cala2", "deep3_lsh4"), ("cala1", "antiqua_historical")):
        cfg = compose_cfg(
            ["script=antiqua", f"version={version}", "preset=full", "data.train=[x]", "data.val=[y]"]
        )
        assert cfg.warmstart.model.endswith(f"/{name}/0.ckpt.json")


# The resource lines of the team's own job scripts on ZIH Power9 (github.com/bertsky/hsbcala at 72d3719,
# ocrtrain_hsbfraktur.slurm for Calamari 2, ocrtrain1_hsbfraktur.slurm for Calamari 1), written down here, not
# read from conf/: what Slurm must receive from cluster=zih_power9. (--chdir differs on purpose: /projects became
# read-only on compute nodes in 2023; --time=10:00:00 is 600 as submitit writes minutes.)
TEAM_SBATCH = {
    "cala2": ["--partition=ml", "--gres=gpu:4", "--time=600", "--nodes=1", "--ntasks-per-node=1",
              "--cpus-per-task=21", "--mem-per-cpu=1443M", "--account=p_da_layout"],
    "cala1": ["--partition=ml", "--gres=gpu:1", "--time=600", "--nodes=1", "--ntasks-per-node=1",
              "--cpus-per-task=22", "--mem-per-cpu=1443M", "--account=p_da_layout"],
}  # fmt: skip


@pytest.mark.parametrize("version", ["cala2", "cala1"])
def test_zih_power9_asks_slurm_for_the_teams_resources(version, monkeypatch):
    """The sbatch script submitit renders from the composed launcher (per-version interpolations resolved)
    carries the team's resource lines, and no second value for any of them."""
    from omegaconf import OmegaConf

    from hsbcala.slurm import launch

    monkeypatch.delenv("HSBCALA_SLURM_ACCOUNT", raising=False)
    cfg = compose_cfg(["cluster=zih_power9", f"version={version}"], hydra_node=True)
    script = launch.sbatch_preview(OmegaConf.to_container(cfg.hydra.launcher, resolve=True), n_jobs=1)
    sbatch = [x.removeprefix("#SBATCH ") for x in script.splitlines() if x.startswith("#SBATCH ")]
    for line in TEAM_SBATCH[version]:
        key = line.split("=", 1)[0]
        assert [x for x in sbatch if x.split("=", 1)[0] == key] == [line], (line, sbatch)


def test_embedded_default_is_small_and_from_scratch():
    cfg = compose_cfg()
    assert (cfg.script.name, cfg.version.name, cfg.cluster.name, cfg.preset) == (
        "fraktur",
        "cala2",
        "local",
        "demo",
    )
    assert cfg.warmstart.model is None and cfg.train.epochs <= 20
    # the demo set's folder carries its size and seed (sets of other sizes never share one)
    assert cfg.data.train[0].endswith("data/synthetic/1000+60-seed50-pages/fraktur/train/*/*.png")


def test_typo_in_key_fails_while_composing():
    with pytest.raises(ConfigCompositionException, match="train.bach_size"):
        compose_cfg(["train.bach_size=8"])
    with pytest.raises(ConfigError, match="train.bach_size"):
        schema.check(compose_cfg(["+train.bach_size=8"]))


def test_wrong_type_fails_while_composing():
    with pytest.raises((ValidationError, ConfigCompositionException), match="batch_size"):
        compose_cfg(["train.batch_size=many"])


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(MissingConfigException, match="antiqua"):
        compose_cfg(["script=latin"])


def test_semantic_checks_name_the_key():
    with pytest.raises(ConfigError, match="train.epochs"):
        schema.check(compose_cfg(["train.epochs=0"]))


def test_early_stopping_patience_below_two_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="early_stopping_patience=1 cannot work: .*n_to_go > 1"):
        schema.check(compose_cfg(["train.early_stopping_patience=1"]))
    schema.check(compose_cfg(["train.early_stopping_patience=0"]))  # off
    schema.check(compose_cfg(["train.early_stopping_patience=2"]))


@pytest.mark.parametrize(
    "override,key,valid",
    [
        ("train.codec=merge", "train.codec", "recompute, keep_loaded"),
        ("profiler.if_missing=ignore", "profiler.if_missing", "error, warn"),
        ("data.split.by=page", "data.split.by", "directory, pattern"),
    ],
)
def test_enumerations_fail_while_composing_with_the_key(override, key, valid):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg([override])
    cause = str(info.value.__cause__)
    assert f"full_key: {key}" in cause and valid in cause


def test_full_preset_without_data_names_the_missing_key(tmp_path):
    proc = run_inprocess("train", ["preset=full", f"paths.root={tmp_path}"], cwd=tmp_path)  # in this process
    assert proc.returncode != 0
    assert "data.train" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_option_on_the_command_line_is_one_clear_line(tmp_path):
    # A subprocess: train.py itself, as a user starts it (hsbcala.core.cli: one line, exit 2).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "version=cala3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr == "hsbcala: error: version=cala3: no such option; available: cala1, cala2\n"
    assert not (tmp_path / "models").exists()
    # the in-process runs of the other tests report a failure while composing exactly as train.py does
    inproc = run_inprocess("train", ["version=cala3"], cwd=tmp_path)
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (proc.returncode, proc.stdout, proc.stderr)


def _help(entry: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"{entry}.py"), "--help"],
        capture_output=True,
        check=False,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_explains_every_group_option_and_names_keys_that_exist():
    """``--help`` is hsbcala's template (conf/config.yaml, conf/evaluate.yaml: hydra.help), not Hydra's bare config
    dump: every option of every group in conf/ is described, and every key it names exists in the composed config
    (on a Slurm cluster, for hydra.launcher.*), so the text cannot go stale silently."""
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    key_re = re.compile(
        # not a docs path such as docs/train.md
        r"(?<![/\w])((?:data|train|eval|mlflow|warmstart|hydra)\.[a-z_.]*[a-z_]|model_dir|dry_run|verbose|data_check_only)\b(?!\.md)"
    )
    for entry, config in (("train", "config"), ("evaluate", "evaluate")):
        text = _help(entry)
        assert "== Config ==" not in text and "Powered by Hydra" not in text
        keys = set(key_re.findall(text.split("== Main keys")[1].split("The whole composed config")[0]))
        keys -= {"train.py", "evaluate.py"}
        assert len(keys) >= 8, text
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose(config, overrides=["cluster=slurm_local"], return_hydra_config=True)
        for key in keys:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            assert node is not None and leaf in node, (
                f"--help of {entry}.py names {key}, which does not exist"
            )

    section = _help("train").split("== Groups")[1].split("== Main keys")[0]
    for group in (d for d in (ROOT / "conf").iterdir() if d.is_dir()):
        line = next((ln for ln in section.splitlines() if ln.split()[:1] == [group.name]), "")
        missing = [p.stem for p in group.glob("*.yaml") if not re.search(rf"\b{p.stem}\b", line)]
        assert line and not missing, f"--help does not describe {group.name}: {missing or 'the group'}"
