"""Train one McDonnell recipe on one dataset and print its figures (time per epoch and
per step, accuracy, the learning rates it ran), on the Keras backend KERAS_BACKEND names.

    .venv/bin/python benchmarks/train_recipes.py --dataset mnist --data ../shared/data/mnist.npz \
        --arch wrn-8-1 --method mcdonnell2018 --epochs 3
    .venv/bin/python benchmarks/train_recipes.py --dataset cifar10 --data ../shared/data/cifar10_train.npz \
        --arch wrn-20-4 --val-split 0.1 --epochs 62      # a GPU job, not for a laptop CPU

--limit N trains on the first N training images only (a quick look on a CPU); the
validation split and the test split are never limited. Figures go to stdout and, with
--json, to a file; the model and the per-epoch log go to --out (default: a temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data", type=Path, help="the .npz (e.g. ../shared/data/mnist.npz)")
    parser.add_argument("--arch", default="wrn-8-1")
    parser.add_argument("--method", default="mcdonnell2018", choices=["mcdonnell2018", "shifted-relu2019"])
    parser.add_argument("--precision", default="1bit", choices=["1bit", "float"])
    parser.add_argument("--schedule", choices=["warm-restarts", "cosine"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=125)
    parser.add_argument("--val-split", type=float, default=0.0)
    parser.add_argument("--limit", type=int, help="train on the first N training images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-recompute-bn", dest="recompute_bn", action="store_false",
                        help="keep the moving BN statistics of training (default: recompute them)")
    parser.add_argument("--out", type=Path, help="model path [default: a temporary directory]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from mcu_onebit.native import keras as load_keras

    keras = load_keras()
    from mcu_onebit.datasets import load_dataset
    from mcu_onebit.errors import OnebitError
    from mcu_onebit.train import TrainConfig, train

    config = TrainConfig(
        dataset=args.dataset, data=args.data, arch=args.arch, method=args.method, precision=args.precision,
        schedule=args.schedule, epochs=args.epochs, batch_size=args.batch_size, val_split=args.val_split,
        seed=args.seed, recompute_bn=args.recompute_bn,
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="train_recipes_")) / "model.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.limit:  # a smaller copy of the archive: the first N training images, every test image
        import numpy as np

        full = load_dataset(args.dataset, args.data)
        subset = out.parent / f"{args.dataset}_first{args.limit}.npz"
        np.savez(subset, x_train=full.x_train[: args.limit], y_train=full.y_train[: args.limit],
                 **({"x_test": full.x_test, "y_test": full.y_test} if len(full.x_test) else {}))
        config = replace(config, data=subset)
    try:
        t0 = time.time()
        result = train(config, out)
    except OnebitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    epochs = result["epochs"]
    seconds = [e["seconds"] for e in epochs]
    figures = {
        "dataset": args.dataset, "arch": args.arch, "method": args.method, "precision": args.precision,
        "schedule": result["schedule"], "augmentation": result["augmentation"], "epochs": len(epochs),
        "train_images": result["train_images"], "backend": keras.backend.backend(), "devices": result["devices"],
        "cpus": os.cpu_count(),
        "seconds_first_epoch": seconds[0],
        "seconds_per_epoch_after_first": round(sum(seconds[1:]) / max(1, len(seconds) - 1), 2) if len(seconds) > 1 else None,
        "total_seconds": round(time.time() - t0, 1),
        "lr_per_epoch": [round(e["lr"], 6) for e in epochs],
        "train_accuracy": [round(e["accuracy"], 4) for e in epochs],
        "val_accuracy": [round(e["val_accuracy"], 4) for e in epochs],
        "test_accuracy": result["test_accuracy"], "model": str(out),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
