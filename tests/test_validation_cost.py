"""Validation cost at scale (issue 20): train.val_every validates every Nth epoch through Calamari 2's own
option (tfaip's --trainer.val_every_n, early stopping checked at the same epochs), and the share of the wall time
spent validating comes from the engine's own benchmark table (lines copied from a real 5,325-line training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsbcala import engines
from hsbcala.config import schema
from hsbcala.core.errors import ConfigError
from hsbcala.engines.base import TrainInputs
from tests.conftest import compose_cfg

# tfaip 1.2's BenchmarkCallback table and the epoch line after it, as preset=scratch's engine.log has them
TABLE = """\
INFO     2026-12-07 15:32:31,944 tfaip.trainer.callbacks.benchm: Benchmark results:
+-----------------+------------------------+---------------------+--------------------+-----------------------+---------------------+---------------------+
|    Benchmark    |      Train Total       |     Train Batch     |    Train Sample    |       Test Total      |      Test Batch     |     Test Sample     |
+-----------------+------------------------+---------------------+--------------------+-----------------------+---------------------+---------------------+
|    AVG Count    |           1            |         500         |        1010        |           1           |         500         |         1010        |
|   AVG Time Per  |   2973.9725859165192   |   5.584930795907974 | 2.7667058454590034 |   2973.972589969635   |   5.584930795907974 |  2.7667058454590034 |
|    Last Count   |           1            |         250         |        505         |           1           |          32         |         505         |
|  Last Time Per  |   1186.3249695301056  |  4.647146130561828  |  2.3005673913672418 |   23.940380573272705  |  0.7419417724013329 | 0.047014132112559705 |
+-----------------+------------------------+---------------------+--------------------+-----------------------+---------------------+---------------------+"""
VALIDATED = (
    "INFO     2026-12-07 15:32:51,322 tfaip.trainer.callbacks.logger: Results of epoch    2 CER: 0.0700 - "
    "ctc-loss: 13.2646 - loss: 13.2646 - loss/mean_epoch: 13.2646 - val_CER: 0.0430 - val_ctc-loss: 8.9894"
)
NOT_VALIDATED = (
    "INFO     2026-12-07 15:52:51,322 tfaip.trainer.callbacks.logger: Results of epoch    3 CER: 0.0383 - "
    "ctc-loss: 7.3041 - loss: 7.3041 - loss/mean_epoch: 7.3041"
)


def _argv(version: str, *overrides: str) -> list[str]:
    cfg = compose_cfg([f"version={version}", *overrides])
    inp = TrainInputs(model_dir=Path("/m"), train=("/t/*.png",), val=("/v/*.png",), n_train=4000)
    return engines.get(version).train_argv(cfg.train, inp)


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_val_every_maps_to_calamari2s_own_frequency_and_early_stopping_follows():
    argv = _argv("cala2", "train.val_every=4")
    assert _after(argv, "--trainer.val_every_n") == "4" and _after(argv, "--early_stopping.frequency") == "4"
    default = _argv("cala2")  # the golden argv files: nothing added when every epoch validates
    assert "--trainer.val_every_n" not in default and _after(default, "--early_stopping.frequency") == "1"


def test_val_every_below_one_and_calamari1_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"train.val_every must be >= 1, got 0"):
        schema.check(compose_cfg(["version=cala2", "train.val_every=0"]))
    with pytest.raises(ConfigError, match=r"train.val_every=2 .*Calamari 1"):
        schema.check(compose_cfg(["version=cala1", "train.val_every=2"]))


def test_validation_seconds_come_from_the_benchmark_table_of_validated_epochs_only():
    parser = engines.get("cala2").Parser(per_stage=100)
    for line in [*TABLE.splitlines(), VALIDATED]:
        parser.feed(line)
    assert parser.val_seconds == pytest.approx(23.940380573272705)
    # an epoch without validation: tfaip prints the last validation's time again; it is not counted twice
    for line in [*TABLE.splitlines(), NOT_VALIDATED]:
        parser.feed(line)
    assert parser.val_seconds == pytest.approx(23.940380573272705)


@pytest.mark.slow
def test_a_real_calamari2_training_validates_every_second_epoch_and_says_what_validation_cost(
    tmp_path, fraktur_books
):
    from tests.test_train_integration import client, launch, state_of, tiny

    train_books, val_books = fraktur_books
    proc = launch(
        tiny(tmp_path, train_books, val_books, "cala2", **{"train.epochs": "4", "train.val_every": "2"})
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = tmp_path / "model-cala2"
    log = (model_dir / "engine.log").read_text(encoding="utf-8")
    assert "--trainer.val_every_n 2" in log
    epochs = [line for line in log.splitlines() if "Results of epoch" in line]
    assert len(epochs) == 4 and ["val_CER" in line for line in epochs] == [False, True, False, True]
    share = [line for line in proc.stderr.splitlines() if "hsbcala: validation took " in line]
    assert len(share) == 1 and "2 validations" in share[0], proc.stderr[-2000:]
    run = client(tmp_path).get_run(state_of(model_dir)["run_id"])
    assert 0 < run.data.metrics["val_time_share"] < 1
    steps = [m.step for m in client(tmp_path).get_metric_history(run.info.run_id, "val_cer")]
    assert steps == [2, 4]
    # patience is counted in epochs on the console: early stopping judges every second epoch only
    assert "epoch 3/4 | train CER" in proc.stderr and "(patience 9)" in proc.stderr
