"""Export Calamari 2 training checkpoints as models calamari-predict loads (engine side).

Run by the Python of the Calamari 2 engine environment (hsbcala is not installed there)::

    python cala2_export.py '{"out": "/job/checkpoints", "checkpoints": [["/m/checkpoint/checkpoint_0003", "NAME"]]}'

writes ``<out>/NAME.ckpt.json`` + ``<out>/NAME.ckpt/`` (a SavedModel) per checkpoint, the layout of the model
``--trainer.export_best`` writes, and prints one JSON line ``{"exported": [{"name", "model", "error"}, ...]}``
(``error``: why that checkpoint could not be exported, e.g. truncated variables; the others still are).

Why a script: a ``checkpoint/checkpoint_NNNN/`` is a training state, the *training* graph's variables with the
optimizer's slots; calamari-predict needs the prediction graph's SavedModel. This does what tfaip's trainer does
between a resume and its export of the best model (``tfaip/trainer/trainer.py``: ``_create_optimizer``,
``scenario.setup_training``, ``keras_train_model.load_weights``; the early-stopping callback's
``scenario.export(dir, trainer_params)``), once per checkpoint in one process (TensorFlow starts once):

- the training graph is built from the first checkpoint's ``trainer_params.json`` (all checkpoints of one
  training share network and codec), no training data is read;
- every checkpoint's variables are loaded into it, and the load must match every variable of the graph;
- the weights exported are the exponential moving average (``ema_decay``, Calamari's default 0.99) kept in the
  optimizer's slots, as they are when the trainer validates (``val_CER``) and exports ``best.ckpt``: the
  checkpoint itself holds the raw weights (tfaip stores it before ``SwapEMAWeights`` swaps them in).

Uses tfaip's private ``Trainer._create_optimizer`` and Keras' ``_model_variables_moving_average`` on purpose: no
public API rebuilds a training graph from a checkpoint; the engine environment's lock pins both.
"""

import json
import os
import sys


def main(spec: dict) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfaip.trainer.trainer import Trainer

    checkpoints = spec["checkpoints"]
    if not checkpoints:
        return {"exported": []}
    params, scenario_cls = Trainer.parse_trainer_params(
        os.path.join(checkpoints[0][0], "trainer_params.json")
    )
    params.warmstart.model = None  # the weights come from the checkpoint; the warm-start model may be gone
    params.output_dir = spec["out"]  # (the trainer insists on one; nothing is written there by it)
    trainer = scenario_cls.create_trainer(params, restore=True)
    trainer.setup_data()
    trainer.setup_model()
    params.gen.train_data(trainer.data)  # the graph's pipelines (file lists only: no line is read)
    params.gen.val_data(trainer.data)
    params.learning_rate.epochs = params.epochs
    params.learning_rate.steps_per_epoch = 1  # the schedule's values do not matter: nothing is trained
    optimizer = trainer._create_optimizer()
    scenario = trainer.scenario
    scenario.setup_training(optimizer, skip_model_load_test=True)
    model = scenario.keras_train_model
    # the optimizer's slots (the moving average included), for the checkpoint to restore into
    optimizer.build(model.trainable_variables)
    ema = getattr(optimizer, "_model_variables_moving_average", None)
    if params.ema_decay and ema is None:
        raise SystemExit(f"ema_decay={params.ema_decay} but the optimizer keeps no moving average")

    exported = []
    for path, name in checkpoints:
        entry = {"name": name, "model": os.path.join(spec["out"], f"{name}.ckpt.json"), "error": None}
        try:
            status = model.load_weights(os.path.join(path, "variables", "variables"))
            status.assert_existing_objects_matched()  # every variable of the graph came from the checkpoint
            if params.ema_decay:
                for var, average in zip(model.trainable_variables, ema):
                    var.assign(average)
            own = Trainer.parse_trainer_params(os.path.join(path, "trainer_params.json"))[0]
            scenario.params.default_serve_dir = f"{name}.ckpt"
            scenario.params.trainer_params_filename = f"{name}.ckpt.json"
            scenario.export(spec["out"], own)
        except Exception as exc:  # noqa: BLE001 - one unreadable checkpoint must not cost the others
            entry["error"] = (
                f"{path}: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
            )
            print(f"cannot export {path}: {exc}", file=sys.stderr)
        exported.append(entry)
    return {"exported": exported}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
