"""bench/reference.py reads the curve of its trainings off hsbcala's console: the epoch lines as the real
``console.Progress`` prints them for the real Calamari 2 parser (an epoch without validation is no point), and
the wording of curves begun before the lines were shortened (44e510b), which the running benchmark's file holds."""

from __future__ import annotations

import importlib.util

from hsbcala import engines
from tests.conftest import ROOT


def _reference():
    spec = importlib.util.spec_from_file_location("bench_reference", ROOT / "bench" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_curve_takes_every_validated_epoch_of_both_stages(capsys):
    from hsbcala.core import console

    reference = _reference()
    lines = []
    for stage in (0, 1):  # preset=full: augmented lines, then the original ones, each counting epochs from 1
        parser = engines.get("cala2").Parser(per_stage=500, stage=stage)
        progress = console.Progress(epochs=500, stages=2, patience=10, lines_per_epoch=2000)
        capsys.readouterr()
        for epoch, val in ((1, " - val_CER: 0.0345"), (2, ""), (3, " - val_CER: 0.0123")):
            engine_line = (
                f"INFO  tfaip.trainer.callbacks.logger: Results of epoch {epoch:4d} CER: 0.02 - loss: 3.5"
            )
            for u in parser.feed(engine_line + val):
                progress.follow(parser, u)
        lines += capsys.readouterr().err.splitlines()
    points = [p for p in map(reference.epoch_point, lines) if p]
    assert points == [
        {"epoch": e, "val_cer": v, "stage": s} for s in (1, 2) for e, v in ((1, 0.0345), (3, 0.0123))
    ], lines
    old = "hsbcala: stage 1/1 epoch 14/100 | train CER 0.0094 | val CER 0.0176 | best 0.0173 (epoch 12) | …"
    assert reference.epoch_point(old) == {"epoch": 14, "val_cer": 0.0176, "stage": 1}
