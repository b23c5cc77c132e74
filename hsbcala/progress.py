"""Turn a Calamari engine's console output into metrics (pure; fed one line at a time while training runs).

Metric names are the same for both versions (MLflow compares them side by side):

- ``train_cer``, ``train_loss``: Calamari 2 per epoch (``Results of epoch N CER: … loss: …``); Calamari 1 at
  every display line (``#00000040: loss=… ler=…``, ``ler`` is its running CER).
- ``val_cer``, ``val_loss``: Calamari 2 per epoch (``val_CER``, ``val_loss``). Calamari 1 prints the validation
  CER of a check only when it is a new best (``Found better model with accuracy of X%``), so there
  ``val_cer`` is logged at those checks only.
- ``best_val_cer``: the best validation CER so far, at every check (both versions).
- ``stage``: 0 while training on augmented data, 1 on the original lines only (both engines train twice when
  augmenting, restarting their epoch/iteration count for the second stage).

Steps: Calamari 2 ``stage * epochs + epoch``; Calamari 1 ``stage * max_iters + iteration``. Both are derived from
what the engine prints, so a resumed training continues the same curve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STAGE_SWITCH = "Starting training on original data only"
_C2_EPOCH = re.compile(r"Results of epoch\s+(\d+)\s+(.*)$")
_C2_PAIR = re.compile(r"([\w/-]+): (-?[\d.]+(?:e[-+]?\d+)?)")
_C1_DISPLAY = re.compile(r"^#(\d+): loss=(-?[\d.]+) ler=(-?[\d.]+) dt=([\d.]+)s")
_C1_BETTER = re.compile(r"Found better model with accuracy of (-?[\d.]+)%")
_C1_WORSE = re.compile(r"No better model found\. Currently accuracy of (-?[\d.]+)%")
_C2_NAMES = {"CER": "train_cer", "loss": "train_loss", "val_CER": "val_cer", "val_loss": "val_loss"}


@dataclass
class Update:
    step: int
    metrics: dict[str, float]


@dataclass
class ProgressParser:
    """Stateful parser; ``feed(line)`` returns the metric updates that line completes."""

    version: str
    per_stage: int  # Calamari 2: epochs per stage; Calamari 1: max iterations per stage
    check_every: int = 1  # Calamari 1: iterations between early-stopping checks
    stage: int = 0
    start: int = 0  # epoch (cala2) or iteration (cala1) of the checkpoint resumed from
    best_val_cer: float | None = None
    epochs_seen: int = 0
    iterations_seen: int = 0
    _last_iter: int = field(default=0, repr=False)
    _checks: int = field(default=-1, repr=False)

    def feed(self, line: str) -> list[Update]:
        if STAGE_SWITCH in line:
            if self.stage == 0:
                self._last_iter, self._checks = 0, -1
            self.stage = 1
            return [Update(self._offset(), {"stage": 1.0})]
        if self.version == "cala2":
            return self._cala2(line)
        return self._cala1(line)

    def _offset(self) -> int:
        return self.stage * self.per_stage

    def _best(self, cer: float) -> float:
        self.best_val_cer = cer if self.best_val_cer is None else min(self.best_val_cer, cer)
        return self.best_val_cer

    def _cala2(self, line: str) -> list[Update]:
        m = _C2_EPOCH.search(line)
        if not m:
            return []
        epoch = int(m.group(1))
        values = {k: float(v) for k, v in _C2_PAIR.findall(m.group(2))}
        metrics = {_C2_NAMES[k]: v for k, v in values.items() if k in _C2_NAMES}
        if "val_cer" in metrics:
            metrics["best_val_cer"] = self._best(metrics["val_cer"])
        metrics["stage"] = float(self.stage)
        self.epochs_seen += 1
        return [Update(self._offset() + epoch, metrics)]

    def _cala1(self, line: str) -> list[Update]:
        m = _C1_DISPLAY.search(line)
        if m:
            it = int(m.group(1))
            self.iterations_seen += max(0, it - max(self._last_iter, self.start if self.stage == 0 else 0))
            self._last_iter = it
            return [Update(self._offset() + it, {"train_loss": float(m.group(2)), "train_cer": float(m.group(3)),
                                                 "stage": float(self.stage)})]
        better, worse = _C1_BETTER.search(line), _C1_WORSE.search(line)
        if not (better or worse):
            return []
        if self._checks < 0:  # first check of this launch: count from the checkpoint resumed from
            base = self.start if self.stage == 0 or self._last_iter else 0
            self._checks = max(self._last_iter, base) // self.check_every
        self._checks += 1
        step = self._offset() + self._checks * self.check_every
        acc = float((better or worse).group(1)) / 100.0
        if better:
            return [Update(step, {"val_cer": 1.0 - acc, "best_val_cer": self._best(1.0 - acc)})]
        if acc <= 0:  # no valid model yet (Calamari 1 starts from accuracy 0)
            return []
        return [Update(step, {"best_val_cer": self._best(1.0 - acc)})]
