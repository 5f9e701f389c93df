"""The 1-bit / full-precision gap on CIFAR-10: trains the 1-bit network and its
full-precision twin with the same recipe, data and seed, holding out 5,000 training images
for validation, and prints both validation accuracies and the cost of a training step of
each (median ms/step after warm-up) and their ratio.

Defaults are McDonnell 2018's published recipe (WRN-20-4, 62 epochs of warm restarts,
flips, random-valued 4-pixel pad and crop, 18x18 cutout, batch 125): a GPU job.

    # a GPU, the paper's recipe (published: 1-bit 94.66%, full precision 95.61% with cutout)
    .venv/bin/python benchmarks/cifar10_gap.py
    # a CPU: a narrow net on a few thousand images for a couple of epochs
    .venv/bin/python benchmarks/cifar10_gap.py --arch wrn-8-1 --limit 4000 --epochs 2

Step time is measured after both runs, in a timing phase where the two trained models take
training steps on the same augmented batches in alternation (3 warm-up steps each, every
step synchronised by reading its loss, so asynchronous dispatch cannot hide device time),
so that load from other processes falls on both alike. Each run's seconds per epoch are in
its log (<out>/1bit.json, float.json). `--max-ratio 1.10` makes the command fail when the 1-bit step costs more than 10%
over the full-precision one. Figures go to stdout and, with --json, to a file.
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


DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_train.npz"
VALIDATION_IMAGES = 5000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="cifar10_train.npz (x_train, y_train)")
    parser.add_argument("--arch", default="wrn-20-4")
    parser.add_argument("--method", default="mcdonnell2018", choices=["mcdonnell2018", "shifted-relu2019"])
    parser.add_argument("--epochs", type=int, default=62)
    parser.add_argument("--batch-size", type=int, default=125)
    parser.add_argument("--limit", type=int, help="train on N training images only (the 5,000 validation images stay)")
    parser.add_argument("--cutout", type=int, help="cutout side [default: 18, the paper's with cutout]")
    parser.add_argument("--no-recompute-bn", dest="recompute_bn", action="store_false",
                        help="keep the moving BN statistics of training (default: recompute them)")
    parser.add_argument("--timing-steps", type=int, default=50, help="alternating timing: steps per model")
    parser.add_argument("--max-ratio", type=float, help="exit 1 when 1-bit / float step time exceeds this")
    parser.add_argument("--bn-affine", action="store_true",
                        help="inner BNs learn scale and offset [default: not, the paper's recipe]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for models and logs [default: a temporary one]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import numpy as np

    from mcu_onebit.datasets import load_dataset
    from mcu_onebit.errors import OnebitError
    from mcu_onebit.train import TrainConfig, train

    try:
        full = load_dataset("cifar10", args.data)
    except OnebitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="cifar10_gap_"))
    work.mkdir(parents=True, exist_ok=True)
    # The held-out 5,000 go in the archive's test split, so both runs validate on the same images.
    order = np.random.default_rng(args.seed).permutation(len(full.x_train))
    val, trainset = order[:VALIDATION_IMAGES], order[VALIDATION_IMAGES:]
    if args.limit:
        trainset = trainset[: args.limit]
    split = work / "cifar10_split.npz"
    np.savez(split, x_train=full.x_train[trainset], y_train=full.y_train[trainset],
             x_test=full.x_train[val], y_test=full.y_train[val])

    base = TrainConfig(dataset="cifar10", data=split, arch=args.arch, method=args.method, epochs=args.epochs,
                       batch_size=args.batch_size, cutout=args.cutout, seed=args.seed, recompute_bn=args.recompute_bn,
                       bn_affine=args.bn_affine)
    runs = {}
    for precision in ("1bit", "float"):
        t0 = time.time()
        result = train(replace(base, precision=precision), work / f"{precision}.h5")
        runs[precision] = {
            "val_accuracy": result["test_accuracy"],  # the held-out 5,000
            "train_seconds": result["train_seconds"], "total_seconds": round(time.time() - t0, 1),
        }
    timing = alternating_step_ms(base, work, args.timing_steps)
    for precision in runs:
        runs[precision]["step_ms_median"] = timing[precision]

    import keras

    ratio = timing["1bit"] / timing["float"]
    figures = {
        "arch": args.arch, "method": args.method, "epochs": args.epochs, "batch_size": args.batch_size,
        "train_images": len(trainset), "validation_images": VALIDATION_IMAGES,
        "backend": keras.backend.backend(), "device": _device(), **{p: runs[p] for p in runs},
        "step_time_ratio_1bit_over_float": round(ratio, 3),
        "accuracy_gap_points": round(100 * (runs["float"]["val_accuracy"] - runs["1bit"]["val_accuracy"]), 2),
    }
    print(json.dumps(figures, indent=2))
    print(f"1-bit {runs['1bit']['val_accuracy']:.4f} vs float {runs['float']['val_accuracy']:.4f} validation accuracy; "
          f"step {timing['1bit']:.1f} vs {timing['float']:.1f} ms (x{ratio:.3f})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.max_ratio and ratio > args.max_ratio:
        print(f"error: the 1-bit step costs x{ratio:.3f} the float one, over --max-ratio {args.max_ratio}", file=sys.stderr)
        return 1
    return 0


def alternating_step_ms(base, work: Path, steps: int) -> dict[str, float]:
    """Median ms per training step of each trained model, timed in alternation on the same
    augmented batches (after 3 warm-up steps each), each step synchronised by reading its loss."""
    import keras
    import numpy as np

    from mcu_onebit.datasets import BatchStream, load_dataset
    from mcu_onebit.modelfile import load_model

    data = load_dataset("cifar10", base.data)
    stream = BatchStream(data.x_train, data.y_train, base.batch_size, base.augmentation(data.input_shape), base.seed)
    models = {}
    for precision in ("1bit", "float"):
        model, _ = load_model(work / f"{precision}.h5")
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
        models[precision] = model
    times: dict[str, list[float]] = {p: [] for p in models}
    for i in range(steps + 3):
        x, y = stream.batch(i)
        for precision, model in models.items():
            t0 = time.perf_counter()
            float(np.asarray(model.train_on_batch(x, y)))
            if i >= 3:
                times[precision].append(time.perf_counter() - t0)
    return {p: round(1000 * float(np.median(t)), 2) for p, t in times.items()}


def _device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return ", ".join(sorted({d.device_kind for d in jax.devices()}))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return f"{len(gpus)} GPU"
    return f"CPU x{os.cpu_count()}"


if __name__ == "__main__":
    sys.exit(main())
