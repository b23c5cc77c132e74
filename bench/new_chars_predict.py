"""Engine side of bench/new_chars.py (run by the Calamari 2 environment's Python): the text each epoch's
checkpoint of a training predicts for some lines, in one process (TensorFlow is started once).

    python new_chars_predict.py MODEL_DIR LINES.txt OUT.json

Each ``MODEL_DIR/checkpoint/checkpoint_NNNN`` (the trainer's checkpoint after epoch NNNN) is restored into
the prediction graph built from ``MODEL_DIR/best.ckpt.json`` (same network and codec; Calamari's own model
code, as its version 5→6 migration builds it) and predicted with Calamari's Predictor. Writes
``{epoch: {image: text}}``.
"""

import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def main(model_dir, lines_file, out):
    import tensorflow as tf
    from calamari_ocr.ocr.dataset.datareader.file import FileDataParams
    from calamari_ocr.ocr.predict.params import PredictorParams
    from calamari_ocr.ocr.predict.predictor import Predictor
    from calamari_ocr.ocr.scenario import CalamariScenario
    from calamari_ocr.ocr.training.params import TrainerParams
    from tensorflow import keras

    with open(os.path.join(model_dir, "best.ckpt.json"), encoding="utf-8") as fh:
        d = json.load(fh)
    with open(lines_file, encoding="utf-8") as fh:
        images = [x for x in fh.read().splitlines() if x]
    result = {}
    for ckpt in sorted(glob.glob(os.path.join(model_dir, "checkpoint", "checkpoint_*"))):
        epoch = int(ckpt.rsplit("_", 1)[1])
        keras.backend.clear_session()
        scenario = CalamariScenario(TrainerParams.from_dict(d).scenario)
        inputs = scenario.data.create_input_layers()
        model = keras.models.Model(inputs, scenario.graph.predict(inputs))
        status = tf.train.Checkpoint(graph=scenario.graph).restore(
            os.path.join(ckpt, "variables", "variables")
        )
        status.expect_partial()
        reader = tf.train.load_checkpoint(os.path.join(ckpt, "variables", "variables"))
        logits = next(w for w in model.weights if "logits/kernel" in w.name)
        stored = reader.get_tensor("graph/_graph/logits/kernel/.ATTRIBUTES/VARIABLE_VALUE")
        if not (logits.numpy() == stored).all():  # the restore must have reached the prediction graph
            raise SystemExit(f"{ckpt}: the logits were not restored")
        predictor = Predictor(PredictorParams(silent=True, progress_bar=False), scenario.create_data())
        predictor.set_model(model)
        texts = {}
        for sample in predictor.predict(FileDataParams(images=images)):
            texts[sample.meta["id"]] = sample.outputs.sentence
        result[epoch] = texts
        print(f"epoch {epoch}: {len(texts)} lines", file=sys.stderr)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
