"""`mcu-onebit`: thin click commands over the library; see each module for the work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import OnebitError


# An emulated board's TFLM firmware is built from the user's TFLM tree (mcu_onebit/tflm_tree.py).
TFLM_OPTION = click.option(
    "--tflm", type=click.Path(path_type=Path), envvar="MCU_ONEBIT_TFLM",
    help="A TFLM tree (an Arduino_TensorFlowLite library or a tflite-micro checkout) to build an emulated "
         "board's TFLM firmware from (bench: each network's int8 twin and 1-bit graph under it) "
         "[default: $MCU_ONEBIT_TFLM].")


@click.group()
@click.version_option(package_name="mcu-onebit")
def cli():
    """1-bit-per-weight CNNs on microcontrollers: train -> convert -> flash -> eval."""


@cli.command()
@click.option("--dataset", default="digits", show_default=True, help="digits (built in); mnist, cifar10, ... or any name with --data.")
@click.option("--data", type=click.Path(path_type=Path), help="An .npz with x_train, y_train[, x_test, y_test] (uint8 N,H,W,C).")
@click.option("--arch", default="tiny-resnet", show_default=True, help="tiny-resnet, cnn-small, or wrn-D-K (e.g. wrn-8-1, wrn-20-4).")
@click.option("--method", type=click.Choice(["mcdonnell2018", "shifted-relu2019"]), default="mcdonnell2018", show_default=True,
              help="2018: BN-ReLU, warm restarts; 2019: no BN but the input's, max(x,-1), logits/40, cosine.")
@click.option("--precision", type=click.Choice(["1bit", "float"]), default="1bit", show_default=True,
              help="float: the same network with full-precision convs (the accuracy-gap baseline).")
@click.option("--schedule", type=click.Choice(["warm-restarts", "cosine"]), help="Learning-rate schedule [default: the method's].")
@click.option("--first-cycle", default=2, show_default=True, help="Warm restarts: first cycle in epochs (then x2 each).")
@click.option("--flip/--no-flip", default=None, help="Random horizontal flips [default: per dataset, on for colour 32x32].")
@click.option("--crop-pad", type=int, help="Pad by N random-valued pixels and random-crop back; 0 = off [default: per dataset].")
@click.option("--cutout", type=int, help="Cutout square side filled with random values; 0 = off [default: per dataset].")
@click.option("--epochs", default=62, show_default=True, help="62 = warm-restart cycles 2+4+8+16+32.")
@click.option("--batch-size", default=125, show_default=True)
@click.option("--val-split", default=0.0, show_default=True, help="Hold out this fraction of the training data for validation.")
@click.option("--seed", default=0, show_default=True)
@click.option("--recompute-bn/--no-recompute-bn", default=True, show_default=True,
              help="After training, set BN moving statistics to the mean batch statistics over an augmented epoch.")
@click.option("--weight-decay", default=5e-4, show_default=True, help="Weight decay (SGD convention) of full-precision convs.")
@click.option("--binary-weight-decay", default=5e-4, show_default=True,
              help="Weight decay (SGD convention) of the binary convs' latent weights; 0 = off.")
@click.option("--bn-affine/--no-bn-affine", default=None,
              help="Inner BNs learn scale and offset [default: on, but off for WRNs of width 10 and more, "
                   "McDonnell 2018's regime of wide networks that overfit].")
@click.option("--float-stem", is_flag=True, help="Keep the first 3x3 conv full precision (int8 when deployed; convert --allow-float).")
@click.option("--float-classifier", is_flag=True,
              help="Keep the 1x1 classifier conv full precision (int8 when deployed; convert --allow-float).")
@click.option("--out", default="model.h5", show_default=True, type=click.Path(path_type=Path))
@click.option("--resume", is_flag=True,
              help="Go on from the checkpoint an interrupted run left beside OUT (OUT.ckpt.npz); same options.")
@click.option("--coordinator", metavar="HOST:PORT", envvar="MCU_ONEBIT_COORDINATOR",
              help="Several processes (JAX backend): where process 0 listens for the others. Not needed under srun or mpirun.")
@click.option("--num-processes", type=int, envvar="MCU_ONEBIT_NUM_PROCESSES", help="Several processes: how many in all.")
@click.option("--process-id", type=int, envvar="MCU_ONEBIT_PROCESS_ID", help="Several processes: this one's, 0 to N-1.")
@click.option("--coordinator-timeout", type=float, default=300.0, show_default=True,
              envvar="MCU_ONEBIT_COORDINATOR_TIMEOUT", help="Several processes: seconds to wait for the others to join.")
def train(dataset, data, arch, method, precision, schedule, first_cycle, flip, crop_pad, cutout, epochs, batch_size,
          val_split, seed, recompute_bn, weight_decay, binary_weight_decay, bn_affine, float_stem, float_classifier, out,
          resume, coordinator, num_processes, process_id, coordinator_timeout):
    """Train a 1-bit network (McDonnell 2018 / 2019) and write OUT, OUT.json (training log)
    and OUT.png (curves); the state after each epoch stays in OUT.ckpt.npz until OUT is written.
    Runs on the Keras backend KERAS_BACKEND names (tensorflow, jax, torch); on JAX, also as
    several processes on one or more machines (docs/training.md), process 0 writing OUT."""
    from .cluster import cluster_from_options
    from .train import TrainConfig, train as run

    cluster = cluster_from_options(coordinator, num_processes, process_id, coordinator_timeout)
    run(TrainConfig(
        dataset=dataset, data=data, arch=arch, method=method, precision=precision, epochs=epochs,
        batch_size=batch_size, schedule=schedule, first_cycle=first_cycle, flip=flip, crop_pad=crop_pad,
        cutout=cutout, val_split=val_split, seed=seed, recompute_bn=recompute_bn, weight_decay=weight_decay,
        binary_weight_decay=binary_weight_decay, bn_affine=bn_affine, float_stem=float_stem,
        float_classifier=float_classifier,
    ), out, resume=resume, cluster=cluster)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a table.")
def inspect(model, as_json):
    """Per-layer weights, bits, scales, params and MACs of MODEL (.h5), or per-op weight
    bytes (float, int8, 1-bit), MACs and activation memory of a converted .tflite."""
    from .summary import inspect_file

    report = inspect_file(model)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--board", default="qemu-m4", show_default=True, help="A board id from `mcu-onebit boards`.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder [default: build/<board>].")
@click.option("--data", type=click.Path(path_type=Path), help="The dataset .npz, when the model was trained on one.")
@click.option("--allow-float", is_flag=True, help="Keep full-precision conv layers (as int8 CONV_2D) instead of refusing.")
@click.option("--runtime", type=click.Choice(["static", "tflm"]), help="Runtime in the firmware [default: the board's].")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Static runtime: run each conv with its batch norm and residual ADD row by row (less RAM); "
                   "both runtimes: batch norms as channel tables (faster, more flash).")
@click.option("--tflm-kernels", type=click.Choice(["project", "library"]), default="project", show_default=True,
              help="TFLM runtime: ADD, MUL and PAD on the project's kernels and batch norms as channel tables "
                   "(faster), or the TFLM library's kernels alone.")
@click.option("--table-flash", type=int, metavar="BYTES",
              help="Flash the channel tables may take, both runtimes; 0: none "
                   "[default: half of what the rest of the firmware leaves on the board].")
def convert(model, board, out, data, allow_float, runtime, fuse, tflm_kernels, table_flash):
    """Convert MODEL (.h5) into a 1-bit TFLite graph and a PlatformIO project for BOARD."""
    from .convert import convert as run

    result = run(model, board, out or Path("build") / board, data=data, allow_float=allow_float, runtime=runtime,
                 fuse=fuse, tflm_kernels=tflm_kernels, table_flash=table_flash, log=click.echo)
    click.echo(result.summary_line())


@cli.command()
@click.option("--project", type=click.Path(path_type=Path), help="Project folder [default: the last converted].")
@click.option("--port", help="Serial port for the upload (real boards).")
@TFLM_OPTION
def flash(project, port, tflm):
    """Build the project with PlatformIO and upload it (emulated boards: boot in the background)."""
    from .flash import flash as run

    click.echo(run(project, port=port, log=click.echo, tflm=tflm))


@cli.command()
@click.option("--project", type=click.Path(path_type=Path), help="Project folder [default: the last converted].")
@click.option("--tcp", "tcp_port", type=int, help="Serve the UART on this TCP port [default: a free one].")
@click.option("--pty", is_flag=True, help="Expose the UART as a pseudo-terminal instead of TCP.")
@click.option("--stop", is_flag=True, help="Stop the emulator that `flash` started in the background.")
@TFLM_OPTION
def emulate(project, tcp_port, pty, stop, tflm):
    """Run the emulated board in the foreground until Ctrl-C, its UART on TCP or a pty."""
    from .flash import emulate as run

    run(project, tcp_port=tcp_port, pty=pty, stop=stop, log=click.echo, tflm=tflm)


@cli.command(name="eval")
@click.option("--project", type=click.Path(path_type=Path), help="Project folder [default: the last converted].")
@click.option("--port", "ports", multiple=True,
              help="Serial port: /dev/ttyACM0, a pty, or socket://host:port; repeat to shard the test set over "
                   "several boards [default: the running emulator].")
@click.option("--limit", type=int, help="Evaluate only the first N test samples.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Report file [default: <convert dir>/eval.json].")
@click.option("--data", type=click.Path(path_type=Path), help="The dataset .npz, when the model was trained on one.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds a device may stay silent before the run stops.")
@click.option("--resume", type=click.Path(path_type=Path),
              help="Continue the interrupted run whose report is RESUME (its journal: RESUME.samples.jsonl, .meta.json).")
@click.option("--html/--no-html", default=True, show_default=True, help="Also write the report as a page (REPORT.html).")
def evaluate(project, ports, limit, json_path, data, timeout, resume, html):
    """Measure on-device accuracy over the serial link against host inference of the twin."""
    from .evaluate import evaluate as run

    if resume is not None and json_path is not None:
        raise click.UsageError("--resume names the report already; drop --json")
    report = run(project, port=list(ports), limit=limit, json_path=json_path, data=data, timeout=timeout,
                 resume=resume, html=html, log=click.echo)
    click.echo(report.table())


@cli.command(name="runner-data")
@click.option("--project", type=click.Path(path_type=Path), help="Project folder [default: the last converted].")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder to write, named for the runner's benchmark: e.g. datasets/ic01 (then --dataset_path datasets).")
@click.option("--data", type=click.Path(path_type=Path), help="The dataset .npz, when the model was trained on one.")
@click.option("--limit", type=int, help="Write only the first N test samples.")
def runner_data(project, out, data, limit):
    """Write the images `eval` runs as a data set for MLPerf Tiny's runner: y_labels.csv and,
    per image, a .bin of the model's int8 input bytes (what `eval` sends)."""
    from .runner_data import write_runner_data

    click.echo(write_runner_data(project, out, data=data, limit=limit).summary_line())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def boards(as_json):
    """List the boards, their budgets and default runtimes."""
    from dataclasses import asdict

    from .boards import all_boards

    records = list(all_boards().values())
    if as_json:
        click.echo(json.dumps([asdict(b) for b in records], indent=2))
        return
    rows = [("board", "name", "cpu", "clock", "flash", "RAM", "runtime", "kernel", "")] + [
        (b.id, b.name, b.cpu, f"{b.clock_hz / 1e6:g} MHz", f"{b.flash_bytes // 1024} KiB", f"{b.ram_bytes // 1024} KiB",
         b.runtime, b.kernel_variant, "emulated" if b.emulated else "")
        for b in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.rjust(w) if i in (3, 4, 5) else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    click.echo("flash and RAM: what the board core leaves for the model (estimates; see docs/deploy_nano33ble.md)")


@cli.command()
@click.option("--board", default="qemu-m4", show_default=True, help="An emulated board id from `mcu-onebit boards`.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the report as JSON to this file.")
@click.option("--model", "models", multiple=True, type=click.Choice(["tiny-resnet", "wrn-8-1"]),
              help="Whole network to count (repeatable) [default: all].")
@click.option("--kernels-only", is_flag=True, help="Skip the whole networks (no TensorFlow conversion).")
@click.option("--variant", help="ONEBIT_CONV2D kernel variant: reference or a folder of firmware/kernels/ [default: the board's].")
@TFLM_OPTION
def bench(board, json_path, models, kernels_only, variant, tflm):
    """Count instructions of the 1-bit conv kernels (reference, optimized) and an int8 conv under QEMU,
    and of whole inferences of networks converted for the static runtime (with --tflm, under TFLM too)."""
    from .bench import bench as run

    report = run(board, json_path=json_path, models=() if kernels_only else (models or None), variant=variant,
                 tflm=tflm)
    click.echo(report.table())

def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except OnebitError as exc:
        from .cluster import exit_now

        click.echo(f"error: {exc}", err=True)
        exit_now(exc.exit_code)  # a multi-process run's process: no waiting at JAX's exit barrier
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # Ctrl-C where no command catches it: nothing was half-written
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
