"""Accuracy lost between the Keras float model and its int8 twin (issue 4: at most 0.5 point).

    .venv/bin/python benchmarks/quantization_loss.py runs/mnist/model.h5 --data ../shared/data/mnist.npz
    .venv/bin/python benchmarks/quantization_loss.py runs/cifar/model.h5 --data ../shared/data/cifar10_train.npz

The twin is made exactly as `mcu-onebit convert` makes it (TF's converter, calibrated on
the first 256 training images of the archive: `converters/twin.py`, CALIBRATION_SAMPLES)
and run with ai-edge-litert's reference kernels, the arithmetic the 1-bit graph matches
bit for bit. It is scored on the test split when the archive has one, else on the
validation split the model was trained with (fraction and seed read from the training
log `<model>.json`, or given with --val-split/--seed). Prints a JSON object; --json also
writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, help="the dataset .npz the model was trained on")
    parser.add_argument("--val-split", type=float, help="[default: from the training log]")
    parser.add_argument("--seed", type=int, help="[default: from the training log]")
    parser.add_argument("--limit", type=int, help="score only the first N evaluation images")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import numpy as np

    from mcu_onebit.converters.twin import CALIBRATION_SAMPLES, convert_twin
    from mcu_onebit.datasets import load_dataset
    from mcu_onebit.errors import OnebitError
    from mcu_onebit.evaluate import HostTwin
    from mcu_onebit.modelfile import load_model, write_text_atomic
    from mcu_onebit.datasets import split_validation

    try:
        model, meta = load_model(args.model)
        dataset = load_dataset(meta.dataset, args.data)
        if len(dataset.x_test):
            split, images, labels = "test", dataset.x_test, dataset.y_test
        else:
            log_path = args.model.with_suffix(".json")
            config = json.loads(log_path.read_text())["config"] if log_path.is_file() else {}
            fraction = args.val_split if args.val_split is not None else config.get("val_split") or 0.0
            seed = args.seed if args.seed is not None else config.get("seed", 0)
            if not fraction:
                raise OnebitError(f"{meta.dataset} has no test split and {log_path} names no validation split; pass --val-split and --seed")
            _, _, images, labels = split_validation(dataset.x_train, dataset.y_train, fraction, seed)
            split = f"validation ({fraction:g} of the training split, seed {seed})"
    except OnebitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]

    t0 = time.time()
    keras_pred = model.predict(images.astype("float32"), batch_size=500, verbose=0).argmax(axis=1)
    twin_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"quantization_loss_{os.getpid()}.tflite"
    twin_path.write_bytes(convert_twin(model, dataset.x_train[:CALIBRATION_SAMPLES]))
    try:
        host = HostTwin(twin_path)
        twin_pred = np.array([host.run(host.quantize(image)).argmax() for image in images])
    finally:
        twin_path.unlink(missing_ok=True)
    keras_acc = float(np.mean(keras_pred == labels))
    twin_acc = float(np.mean(twin_pred == labels))
    figures = {
        "model": str(args.model), "dataset": meta.dataset, "arch": meta.arch, "method": meta.method,
        "precision": meta.precision, "split": split, "images": len(labels),
        "calibration": f"first {CALIBRATION_SAMPLES} training images of the archive",
        "accuracy_keras_float": round(keras_acc, 4), "accuracy_int8_twin": round(twin_acc, 4),
        "loss_points": round(100 * (keras_acc - twin_acc), 2),
        "predictions_changed": int(np.sum(keras_pred != twin_pred)),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        write_text_atomic(args.json, json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
