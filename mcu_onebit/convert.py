"""`mcu-onebit convert`: model.h5 -> twin_int8.tflite, model.tflite (1-bit), report.json
and a PlatformIO project for the board, all in one output folder written atomically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


import numpy as np

from .boards import Board, get_board
from .cheader import read_defines
from .datasets import load_dataset
from .errors import OnebitError
from .eval_journal import DEFAULT_EVAL_REPORT, meta_path, samples_path
from .modelfile import ModelMeta, load_model, read_meta, write_text_atomic
from .outputs import check_output_dir, listing, replace_folder
from .paths import state_dir
from .project import EMULATOR_LOG_FILE, EMULATOR_STATE_FILE

# What the app and kernels add beside the model, on qemu-m4 with the demo model
# (arm-none-eabi-size of firmware.elf minus the model's constants and arena); the
# budget check counts them so a model that only just fits is refused before a build.
APP_FLASH_BYTES = 24 * 1024  # measured: 26,012 B firmware with 3,522 B of model constants (cortex_m_dsp kernel)
APP_STACK_BYTES = 4 * 1024  # besides the arena and the app's receive buffer (receive_buffer_bytes)
# TFLM's interpreter and the builtin kernels a small CNN pulls in: an estimate erring
# high, so the budget check refuses rather than overflows. Measured by hand on qemu-m4
# with current TFLM at -O2 (docs/deploy_nano33ble.md): the demo model's firmware is
# 109,596 B under TFLM, 33,588 B under the static runtime.
TFLM_FLASH_BYTES = 128 * 1024
# Channel tables (converters/channel_table.py) buy speed with flash:
# they may take this share of the flash the rest of the firmware leaves, so that a board
# keeps room for the user's own code.
TABLE_FLASH_SHARE = 0.5
REPORT = "report.json"
PROJECT = "project"
WRITTEN_BY = "mcu-onebit convert"  # report.json's mark: the folder is convert's to replace
LAST_CONVERT = "last_convert"


@dataclass(frozen=True)
class ConvertResult:
    out_dir: Path
    project_dir: Path
    report: dict
    table: str = ""  # the graph report (converters/report.py), as `inspect model.tflite` prints it

    def summary_line(self) -> str:
        """The graph report, then one line of sizes and the board budget with its margins."""
        r = self.report
        kernels = r.get("tflm_kernels")
        return (
            (self.table + "\n" if self.table else "")
            + (("TFLM kernels: " + ", ".join(f"{op} " + (f"project (firmware/kernels/{op.lower()}.c)" if k == "project"
                                                         else "library") for op, k in kernels.items())
                + "; ONEBIT_CONV2D and ONEBIT_CHANNEL_TABLE project\n") if kernels else "")
            + f"wrote {self.out_dir}: model.tflite {r['sizes']['onebit_tflite_bytes']:,} B "
            f"(twin {r['sizes']['twin_tflite_bytes']:,} B), conv weights {r['sizes']['conv_weight_bytes_1bit']:,} B "
            f"(int8 {r['sizes']['conv_weight_bytes_int8']:,} B), channel tables {r['sizes']['channel_table_bytes']:,} B "
            f"(--table-flash), arena {r['memory']['arena_bytes']:,} B; "
            f"flash {r['budget']['flash_used']:,}/{r['budget']['flash_bytes']:,} B "
            f"(margin {r['budget']['flash_margin']:,} B), "
            f"RAM {r['budget']['ram_used']:,}/{r['budget']['ram_bytes']:,} B (margin {r['budget']['ram_margin']:,} B) "
            f"on {r['board']}, {r['runtime']} runtime; budgets are estimates (see `mcu-onebit boards`)"
        )


def model_hash(graph: bytes) -> str:
    """What the device reports and the host checks: the 1-bit graph's identity."""
    return hashlib.sha256(graph).hexdigest()[:16]


def receive_buffer_bytes(input_bytes: int, output_bytes: int, identity: str) -> int:
    """OB_APP_MAX_PAYLOAD for one model (firmware/app/main.c): an INFER request and its
    output, or the identity object, whichever is larger, rounded up to 4 bytes."""
    fixed = read_defines("app/protocol.h")["OB_PROTO_IDENTITY_FIXED_MAX"]
    return -(-max(input_bytes + output_bytes, len(identity.encode()) + fixed) // 4) * 4


def _ram_used(arena_bytes: int, receive_bytes: int) -> int:
    return arena_bytes + receive_bytes + APP_STACK_BYTES


def _fits_ram(board: Board, arena_bytes: int, receive_bytes: int) -> bool:
    return _ram_used(arena_bytes, receive_bytes) <= board.ram_bytes


def _budget(board: Board, runtime: str, constant_bytes: int, arena_bytes: int, receive_bytes: int) -> dict:
    flash_used = constant_bytes + APP_FLASH_BYTES + (TFLM_FLASH_BYTES if runtime == "tflm" else 0)
    ram_used = _ram_used(arena_bytes, receive_bytes)
    budget = {
        "flash_bytes": board.flash_bytes, "flash_used": flash_used, "flash_margin": board.flash_bytes - flash_used,
        "ram_bytes": board.ram_bytes, "ram_used": ram_used, "ram_margin": board.ram_bytes - ram_used,
    }
    if budget["flash_margin"] < 0 or budget["ram_margin"] < 0:
        raise OnebitError(
            f"the model does not fit {board.id}: flash {flash_used:,} of {board.flash_bytes:,} B, "
            f"RAM {ram_used:,} of {board.ram_bytes:,} B; try a narrower or shallower --arch"
        )
    return budget


def _filter_bytes(graph: bytes, op_name: str) -> int:
    """Bytes of the filters of every `op_name` operator in a .tflite."""
    from .converters import tflite_graph as g

    model = g.load(graph)
    sub = model.subgraphs[0]
    return sum(
        g.tensor_data(model, sub.tensors[op.inputs[1]]).nbytes
        for op in sub.operators if g.op_name(model, op) == op_name
    )


def check_arguments(model_path: Path, board_id: str, out_dir: Path, data: Path | None = None,
                    runtime: str | None = None, table_flash: int | None = None) -> tuple[Board, ModelMeta]:
    """Everything `convert` can check without TensorFlow: the model file and its metadata,
    the board, the runtime, the table budget, the data path, and that the output folder may
    be replaced."""
    board = get_board(board_id)
    if runtime not in (None, "static", "tflm"):
        raise OnebitError(f"unknown runtime {runtime!r}; choose static or tflm")
    if table_flash is not None and table_flash < 0:
        raise OnebitError(f"--table-flash {table_flash}: give the bytes of flash channel tables may take, 0 or more "
                          "(0: none)")
    check_output_dir(out_dir, _convert_owns(Path(out_dir)))
    meta = read_meta(model_path)
    if data is not None and not Path(data).exists():
        raise OnebitError(f"dataset file {data} not found; pass an existing --data PATH.npz")
    return board, meta


def _table_budget(flash_left: int, table_flash: int | None) -> int:
    """Bytes for channel tables: the user's --table-flash, else a share of the flash left."""
    return table_flash if table_flash is not None else max(0, int(flash_left * TABLE_FLASH_SHARE))


def _convert_owns(folder: Path) -> Callable[[str], bool] | None:
    """Which files in `folder` mcu-onebit wrote, if an earlier convert wrote it: the files
    its report lists, PlatformIO's build folder, the emulator's state and `eval`'s default
    report family. None when its report is missing or not a convert's."""
    try:
        report = json.loads((folder / REPORT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("written_by") != WRITTEN_BY or not isinstance(report.get("files"), list):
        return None
    default_report = folder / DEFAULT_EVAL_REPORT
    later = {f"{PROJECT}/{name}" for name in (EMULATOR_STATE_FILE, EMULATOR_LOG_FILE)} | {
        p.relative_to(folder).as_posix() for p in (default_report, default_report.with_suffix(".html"),
                                                   meta_path(default_report), samples_path(default_report))}
    written = set(map(str, report["files"])) | later
    return lambda relative: relative in written or relative.startswith(f"{PROJECT}/.pio/")


def convert(model_path: Path, board_id: str, out_dir: Path, data: Path | None = None, allow_float: bool = False,
            runtime: str | None = None, fuse: bool = True, tflm_kernels: str = "project",
            table_flash: int | None = None, log=print) -> ConvertResult:
    """fuse=False: the static runtime runs every op of the graph on its own (--no-fuse).
    table_flash: bytes the channel tables may take (None: TABLE_FLASH_SHARE of what the
    firmware leaves on the board).
    tflm_kernels: under TFLM, the project's kernels where they are faster ("project", and
    with fuse, batch norms as ONEBIT_CHANNEL_TABLE ops in model.tflite) or the library's
    ("library"); converters/tflm_runtime.py kernel_choice and tflm_graph."""
    board, meta = check_arguments(model_path, board_id, out_dir, data, runtime, table_flash)
    dataset = load_dataset(meta.dataset, data)
    if dataset.input_shape != tuple(meta.input_shape):
        raise OnebitError(f"the dataset's images are {dataset.input_shape} but the model takes {tuple(meta.input_shape)}; pass the right --data")

    from .converters.rewrite import rewrite_binary_convs
    from .converters.onebit_conv2d import OP_NAME
    from .converters.report import graph_report
    from .converters import tflite_graph
    from .converters.static_runtime import generate, identity_text, memory_plan
    from .converters.tflm_runtime import generate as generate_tflm, tflm_graph
    from .converters.twin import CALIBRATION_SAMPLES, check_layers, convert_twin
    from .emulator import stop_running
    from .project import generate_project

    model, _ = load_model(model_path)
    check_layers(model, allow_float)
    if not meta.binary_layers and not allow_float:
        raise OnebitError(f"{model_path} has no binary conv layer; train a 1-bit model, or pass --allow-float")

    log(f"converting {model_path} for {board.id}: int8 twin (calibration: first {CALIBRATION_SAMPLES} training images)")
    twin = convert_twin(model, dataset.x_train[:CALIBRATION_SAMPLES])
    # A float model (--allow-float) keeps int8 CONV_2D everywhere: the twin is the graph.
    onebit, rewritten = rewrite_binary_convs(twin, meta.binary_layers) if meta.binary_layers else (twin, [])
    runtime = runtime or board.runtime
    if runtime == "tflm":
        # TFLM runs the graph as it is: its channel tables must be ops of the graph, which
        # model.tflite then holds (the static runtime makes its own, in C).
        flash_left = board.flash_bytes - APP_FLASH_BYTES - TFLM_FLASH_BYTES - len(onebit)
        onebit, table_bytes = tflm_graph(onebit, tflm_kernels, _table_budget(flash_left, table_flash) if fuse else 0)
    digest = model_hash(onebit)
    graph_model = tflite_graph.load(onebit)
    io = [int(np.prod(graph_model.subgraphs[0].tensors[t].shape)) for t in
          (graph_model.subgraphs[0].inputs[0], graph_model.subgraphs[0].outputs[0])]
    receive_bytes = receive_buffer_bytes(*io, identity_text(graph_model, digest))
    static_plan = memory_plan(graph_model, fuse=fuse)  # reported for both runtimes
    unfused_plan = memory_plan(graph_model, fuse=False)
    if runtime == "tflm":
        # On an emulated board the project builds the TFLM tree `flash --tflm` is given
        # (PlatformIO has none for bare metal).
        tflm = generate_tflm(onebit, digest, Path(model_path).name, board, kernels=tflm_kernels)
        model_files, ops = tflm.files, [*tflm.ops, *tflm.custom_ops]
        constant_bytes, arena_bytes = len(onebit), tflm.arena_bytes
    elif runtime == "static":
        plain = generate(onebit, digest, Path(model_path).name, fuse=fuse, table_budget=0)
        flash_left = board.flash_bytes - APP_FLASH_BYTES - plain.constant_bytes
        static = generate(onebit, digest, Path(model_path).name, fuse=fuse,
                          table_budget=_table_budget(flash_left, table_flash))
        if not _fits_ram(board, static.plan.arena_bytes, receive_bytes):
            # The smallest arena, at the price of more kernel set-ups (ROWS_ARENA_SLACK).
            static = generate(onebit, digest, Path(model_path).name, fuse=fuse,
                              table_budget=_table_budget(flash_left, table_flash), rows_slack=None)
        model_files, ops = {"model.c": static.source}, static.ops
        constant_bytes, arena_bytes, table_bytes = static.constant_bytes, static.plan.arena_bytes, static.table_bytes
        static_plan = static.plan  # with the tables the flash allows
    budget = _budget(board, runtime, constant_bytes, arena_bytes, receive_bytes)
    graph = graph_report(onebit, static_plan.arena_bytes, board)
    report = {
        "written_by": WRITTEN_BY,
        "files": [],  # filled in once the folder is staged
        "model": str(Path(model_path).resolve()),
        "model_hash": digest,
        "board": board.id,
        "runtime": runtime,
        "dataset": {"name": meta.dataset, "data": str(Path(data).resolve()) if data else None,
                    "val_split": meta.val_split, "seed": meta.seed},  # eval's images when the data has no test split
        "class_names": meta.class_names,
        "calibration": f"first {CALIBRATION_SAMPLES} training images of {meta.dataset}",
        "ops": ops,
        "tflm_kernels": tflm.kernels if runtime == "tflm" else None,  # builtin op -> "project" or "library"
        "binary_layers": rewritten,
        "sizes": {
            "twin_tflite_bytes": len(twin),
            "onebit_tflite_bytes": len(onebit),
            "conv_weight_bytes_int8": _filter_bytes(twin, "CONV_2D"),
            "conv_weight_bytes_1bit": _filter_bytes(onebit, OP_NAME),
            "constant_bytes": constant_bytes,
            "channel_table_bytes": table_bytes,  # of the constants
        },
        "memory": {"arena_bytes": arena_bytes, "receive_buffer_bytes": receive_bytes, "arena_bytes_static_plan": static_plan.arena_bytes,
                   "arena_bytes_static_plan_unfused": unfused_plan.arena_bytes, "fused": fuse,
                   "tflm_plan_bytes": graph.tflm["head_bytes"], "tflm_arena_bytes": graph.tflm["arena_bytes"]},
        "graph": graph.to_dict(),
        "budget": budget,
    }

    out_dir = Path(out_dir).resolve()

    def fill(staging: Path) -> None:
        (staging / "twin_int8.tflite").write_bytes(twin)
        (staging / "model.tflite").write_bytes(onebit)
        generate_project(board, model_files, staging / PROJECT, max_payload=receive_bytes)
        report["files"] = [*listing(staging), REPORT]
        (staging / REPORT).write_text(json.dumps(report, indent=2) + "\n")

    replace_folder(out_dir, fill, recheck=lambda: check_output_dir(out_dir, _convert_owns(out_dir)),
                   replacing=lambda: stop_running(out_dir / PROJECT))  # it runs the model being replaced
    write_text_atomic(state_dir() / LAST_CONVERT, str(out_dir) + "\n")
    return ConvertResult(out_dir, out_dir / "project", report, graph.table())


def resolve_project(project: Path | None) -> tuple[Path, dict]:
    """The project folder (default: the last converted) and its convert report."""
    if project is None:
        pointer = state_dir() / LAST_CONVERT
        if not pointer.exists():
            raise OnebitError("no project given and nothing converted yet; run `mcu-onebit convert model.h5 --board B` first")
        project = Path(pointer.read_text().strip()) / PROJECT
    project = Path(project).resolve()
    if (project / REPORT).is_file() and (project / PROJECT).is_dir():
        project = project / PROJECT  # the folder given to `convert --out`
    report_path = project.parent / REPORT
    if not (project / "platformio.ini").is_file() or not report_path.is_file():
        raise OnebitError(f"{project} is not a project written by `mcu-onebit convert` (no platformio.ini or ../{REPORT})")
    try:
        report = json.loads(report_path.read_text())
        if not isinstance(report, dict) or not isinstance(report.get("board"), str) or "model_hash" not in report:
            raise ValueError("not a convert report")
    except (OSError, ValueError) as exc:
        raise OnebitError(f"{report_path} is damaged ({exc}); convert the model again") from None
    return project, report
