"""Board records and the projects generated for them, parametrised over the registry.

Real boards cannot be built here (their PlatformIO platforms need the registry), so the
generated project is checked as far as is possible offline: PlatformIO itself parses
its platformio.ini, the resolver registers exactly the graph's ops, the arena is the
converter report's, budgets hold or refuse, and `flash` fails fast when the platform is
missing. (The TFLM sources themselves are compiled by hand against both TFLM APIs:
docs/deploy_nano33ble.md, "How the TFLM adapter is checked".)
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import replace

import pytest

from mcu_onebit.boards import COUNTER_SOURCES, all_boards
from mcu_onebit.errors import OnebitError
from mcu_onebit.platformio_setup import pio_env, pio_executable

BOARDS = sorted(all_boards())
REAL = sorted(b.id for b in all_boards().values() if not b.emulated)


@pytest.mark.parametrize("board_id", BOARDS)
def test_record_has_required_fields(board_id):
    b = all_boards()[board_id]
    assert b.id == board_id and b.name and b.cpu and b.clock_hz > 0
    assert b.flash_bytes > 0 and b.ram_bytes > 0 and b.baud > 0
    assert COUNTER_SOURCES[b.counter_source] == b.counter_unit
    if b.emulated:
        assert b.runtime == "static" and b.qemu_machine
    else:
        assert b.runtime == "tflm" and b.pio_framework == "arduino" and b.upload_protocol
        assert re.fullmatch(r"[a-z0-9_-]+/[a-z0-9_-]+@\d+\.\d+\.\d+", b.pio_platform)
        assert b.pio_lib_deps and b.usb_ids and b.serial_kind in ("usb_cdc", "uart") and b.notes


def test_bad_record_is_refused():
    from mcu_onebit.boards import _check

    good = all_boards()["nano33ble"]
    for bad in (replace(good, pio_platform="platformio/nordicnrf52"),  # not pinned
                replace(good, pio_lib_deps=("https://github.com/x/y.git",)),  # no commit
                replace(good, kernel_variant="cortex_m_dsp", cpu="cortex-m0plus"),
                replace(good, counter_source="ccount")):
        with pytest.raises(ValueError):
            _check(bad)


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """mcu-onebit's per-user state (last converted project) in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCU_ONEBIT_HOME", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory, state):
    """The demo model: tiny-resnet on digits, trained one epoch."""
    from mcu_onebit.train import TrainConfig, train

    path = tmp_path_factory.mktemp("model") / "model.h5"
    train(TrainConfig(epochs=1), path, log=lambda *a: None)
    return path


@pytest.fixture(scope="module")
def converted(demo_model, tmp_path_factory):
    """`convert model.h5 --board nano33ble`, the real thing: report.json and project."""
    from mcu_onebit.convert import convert

    return convert(demo_model, "nano33ble", tmp_path_factory.mktemp("out") / "nano", log=lambda *a: None)


@pytest.fixture(scope="module")
def onebit_graph(converted):
    return (converted.out_dir / "model.tflite").read_bytes()


def _resolver(model_cc: str) -> tuple[list[str], int, int]:
    """The Add* calls, MicroMutableOpResolver size and arena size a generated model.cc has."""
    added = re.findall(r"resolver->(Add\w+)\(", model_cc)
    size = int(re.search(r"constexpr int kOpCount = (\d+);", model_cc).group(1))
    arena = int(re.search(r"constexpr size_t kArenaBytes = (\d+);", model_cc).group(1))
    assert "tflite::MicroMutableOpResolver<kOpCount>" in model_cc
    return added, size, arena


def _pio_config(project) -> dict:
    started = time.monotonic()
    result = subprocess.run([pio_executable(), "project", "config", "--json-output"], cwd=project,
                            env=pio_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10, "pio project config should not touch the network"
    return {section: dict(options) for section, options in json.loads(result.stdout)}


def test_convert_report_matches_the_project(converted):
    from mcu_onebit.converters.channel_table import OP_NAME as TABLE_OP_NAME
    from mcu_onebit.converters.onebit_conv2d import OP_NAME
    from mcu_onebit.converters.tflm_runtime import ADD_CALLS

    report = json.loads((converted.out_dir / "report.json").read_text())
    assert report == converted.report and report["runtime"] == "tflm"
    added, size, arena = _resolver((converted.project_dir / "src" / "model.cc").read_text())
    custom = [OP_NAME, TABLE_OP_NAME]  # the demo network's batch norms are channel tables
    builtin = [op for op in report["ops"] if op not in custom]
    assert set(custom) <= set(report["ops"])
    assert sorted(added) == sorted([ADD_CALLS[op] for op in builtin] + ["AddCustom"] * len(custom))
    assert size == len(report["ops"])
    assert arena == report["memory"]["arena_bytes"] == report["memory"]["tflm_arena_bytes"]
    tflm = report["graph"]["tflm"]
    assert tflm["library"] == "arduino" and tflm["kernel_variant"] == "cortex_m_dsp"
    assert arena == tflm["arena_bytes"] >= tflm["head_bytes"] + tflm["persistent_bytes_estimate"]
    assert report["memory"]["tflm_plan_bytes"] == tflm["head_bytes"] > 0
    assert report["memory"]["arena_bytes_static_plan"] == report["graph"]["arena_bytes_static"] > 0
    # The printed report is the graph table plus the budget with its margins.
    printed = converted.summary_line()
    assert f"TFLM's planner {tflm['head_bytes']:,} B" in printed
    assert f"margin {report['budget']['ram_margin']:,} B" in printed


def test_inspect_prints_what_convert_printed(converted):
    from mcu_onebit.summary import inspect_file

    table = inspect_file(converted.out_dir / "model.tflite").table()
    assert table and table in converted.summary_line()


def test_demo_model_fits_nano33ble_with_margin(converted):
    budget = converted.report["budget"]
    assert budget["flash_used"] + budget["flash_margin"] == budget["flash_bytes"] == all_boards()["nano33ble"].flash_bytes
    assert budget["ram_used"] + budget["ram_margin"] == budget["ram_bytes"]
    assert budget["flash_margin"] > 0 and budget["ram_margin"] > 0


def test_wrn_8_1_fits_nano33ble():
    """WRN-8-1 on CIFAR-10 shapes (untrained weights: sizes do not depend on training)."""
    import numpy as np

    from mcu_onebit.convert import _budget, receive_buffer_bytes
    from mcu_onebit.converters.rewrite import rewrite_binary_convs
    from mcu_onebit.converters.tflm_runtime import generate
    from mcu_onebit.converters.twin import convert_twin
    from mcu_onebit.layers import BinaryConv2D
    from mcu_onebit.models import build_model

    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    model = build_model("wrn-8-1", images.shape[1:], 10)
    onebit, _ = rewrite_binary_convs(convert_twin(model, images), [l.name for l in model.layers if isinstance(l, BinaryConv2D)])
    board = all_boards()["nano33ble"]
    tflm = generate(onebit, "0" * 16, "wrn-8-1", board)
    budget = _budget(board, "tflm", len(onebit), tflm.arena_bytes, receive_buffer_bytes(32 * 32 * 3, 10, "{}"))
    assert budget["flash_margin"] > 0 and budget["ram_margin"] > 0
    assert tflm.plan.head_bytes > 32 * 32 * 16  # at least one 32x32x16 activation


def test_model_too_large_is_refused_at_convert(tmp_path, state):
    """96x96 RGB input: each 96x96x16 activation is 147 KB, a residual block keeps three."""
    import numpy as np

    from mcu_onebit.convert import convert
    from mcu_onebit.train import TrainConfig, train

    rng = np.random.default_rng(0)
    data = tmp_path / "big.npz"
    np.savez(data, x_train=rng.integers(0, 256, (32, 96, 96, 3), dtype=np.uint8), y_train=np.arange(32) % 2,
             x_test=rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8), y_test=np.arange(4) % 2)
    train(TrainConfig(dataset="big", data=data, epochs=1, batch_size=32), tmp_path / "big.h5", log=lambda *a: None)
    out = tmp_path / "out"
    with pytest.raises(OnebitError, match=r"does not fit nano33ble: .*RAM [\d,]+ of 212,992 B.*--arch"):
        convert(tmp_path / "big.h5", "nano33ble", out, data=data, log=lambda *a: None)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("board_id", BOARDS)
def test_board_project(board_id, onebit_graph, tmp_path):
    """Every board's project: PlatformIO parses its platformio.ini; for TFLM the resolver
    registers exactly the graph's ops and the arena is the report's (graph_report for the
    board, which `convert` writes into report.json)."""
    from mcu_onebit.converters import tflite_graph as g
    from mcu_onebit.converters.onebit_conv2d import OP_NAME
    from mcu_onebit.converters.report import graph_report
    from mcu_onebit.converters.static_runtime import generate as generate_static, memory_plan
    from mcu_onebit.converters.channel_table import OP_NAME as TABLE_OP_NAME
    from mcu_onebit.converters.tflm_runtime import ADD_CALLS, generate, tflm_graph
    from mcu_onebit.project import generate_project

    board = all_boards()[board_id]
    if board.runtime == "tflm":
        onebit_graph, _ = tflm_graph(onebit_graph, table_budget=None)  # what convert embeds
        files = generate(onebit_graph, "0123456789abcdef", "model.h5", board).files
    model = g.load(onebit_graph)
    if board.runtime != "tflm":
        files = {"model.c": generate_static(onebit_graph, "0123456789abcdef", "model.h5").source}
    project = generate_project(board, files, tmp_path / "project")
    env = _pio_config(project)[f"env:{board.env_name}"]
    assert env["board"] == board.pio_board
    if board.emulated:
        assert env["platform"].startswith("symlink://") and (project / "linker.ld").is_file()
        assert (project / "src" / "hal_qemu.c").is_file()
        return
    assert env["platform"] == board.pio_platform and env["framework"] == ["arduino"]
    assert env["lib_deps"] == list(board.pio_lib_deps)
    assert any(f'OB_BOARD="{board.id}"' in flag for flag in env["build_flags"])
    assert not (project / "linker.ld").exists()

    report = graph_report(onebit_graph, memory_plan(model).arena_bytes, board)
    added, size, arena = _resolver((project / "src" / "model.cc").read_text())
    ops = {g.op_name(model, op) for op in model.subgraphs[0].operators}
    assert TABLE_OP_NAME in ops  # the demo network's batch norms
    assert sorted(added) == sorted([ADD_CALLS[op] for op in ops - {OP_NAME, TABLE_OP_NAME}] + ["AddCustom"] * 2)
    assert size == len(ops)
    assert arena == report.tflm["arena_bytes"]
    for name in ("hal_arduino.cpp", "main.c", "onebit_conv2d_tflm.cc", "channel_table_tflm.cc", "mean_tflm.cc",
                 "tflm_compat.h", "model_data.cc"):
        assert (project / "src" / name).is_file()
    # MEAN runs the project's kernel (the Arduino library's int8 MEAN is not the twin's).
    model_cc = (project / "src" / "model.cc").read_text()
    assert ("MEAN" in ops) == ("if (op == tflite::BuiltinOperator_MEAN) return onebit::Register_MEAN();" in model_cc)
    assert (project / "lib" / "onebit" / "onebit_conv2d.c").is_file()


def test_emulated_tflm_project_is_refused_by_flash_without_a_tflm_tree(onebit_graph, tmp_path, state):
    from mcu_onebit import flash as flash_module
    from mcu_onebit.converters.tflm_runtime import generate
    from mcu_onebit.project import generate_project

    board = all_boards()["qemu-m4"]
    project = generate_project(board, generate(onebit_graph, "0" * 16, "model.h5", board).files, tmp_path / "out" / "project")
    (tmp_path / "out" / "report.json").write_text(json.dumps({"board": board.id, "runtime": "tflm", "model_hash": "0" * 16}))
    assert "flash --tflm PATH" in (project / "platformio.ini").read_text()
    with pytest.raises(OnebitError, match="pass --tflm PATH .* or set MCU_ONEBIT_TFLM"):
        flash_module.flash(project, log=lambda *a: None)


def test_flash_fails_fast_offline(onebit_graph, tmp_path):
    from mcu_onebit import flash as flash_module
    from mcu_onebit.converters.tflm_runtime import generate
    from mcu_onebit.project import generate_project

    board = all_boards()["nano33ble"]
    project = generate_project(board, generate(onebit_graph, "0" * 16, "model.h5", board).files, tmp_path / "out" / "project")
    (tmp_path / "out" / "report.json").write_text(json.dumps({"board": board.id, "model_hash": "0" * 16}))
    if flash_module.platform_installed(board.pio_platform_name) or flash_module.registry_reachable():
        pytest.skip("the platform is installed or the registry is reachable here")
    started = time.monotonic()
    with pytest.raises(OnebitError, match="needs internet once"):
        flash_module.flash(project, port="/dev/null", log=lambda *a: None)
    assert time.monotonic() - started < 10


def test_boards_command_lists_every_board_with_its_budgets():
    from click.testing import CliRunner

    from mcu_onebit.cli import cli

    records = all_boards()
    listed = json.loads(CliRunner().invoke(cli, ["boards", "--json"]).output)
    assert {b["id"]: (b["flash_bytes"], b["ram_bytes"]) for b in listed} == {
        b.id: (b.flash_bytes, b.ram_bytes) for b in records.values()}
    table = CliRunner().invoke(cli, ["boards"]).output.splitlines()
    for board in records.values():
        [row] = [line for line in table if line.split()[0] == board.id]
        assert f"{board.flash_bytes // 1024} KiB" in row and board.kernel_variant in row


def test_static_plan_runs_elementwise_ops_in_place(onebit_graph):
    """An ADD, MUL or MAXIMUM whose full-size input dies there writes over it: same offset,
    and never a larger arena than with a buffer per tensor. (That the kernels compute the
    same bytes when they alias is what the host-build and QEMU equivalence tests check:
    they run this plan.)"""
    from mcu_onebit.converters import tflite_graph as g
    from mcu_onebit.converters.static_runtime import IN_PLACE_OPS, memory_plan

    model = g.load(onebit_graph)
    graph = model.subgraphs[0]
    plan, separate = memory_plan(model), memory_plan(model, in_place=False)
    last = {}
    for i, op in enumerate(graph.operators):
        for t in op.inputs:
            last[int(t)] = i
    in_place = 0
    for i, op in enumerate(graph.operators):
        out = int(op.outputs[0])
        if g.op_name(model, op) in IN_PLACE_OPS and out in plan.offsets:
            dying = [int(t) for t in op.inputs if int(t) in plan.offsets and last[int(t)] == i
                     and list(graph.tensors[int(t)].shape) == list(graph.tensors[out].shape)]
            if dying:
                assert plan.offsets[out] == plan.offsets[dying[0]]
                in_place += 1
    assert in_place >= 2  # the demo net's BN ADDs at least
    assert plan.arena_bytes <= separate.arena_bytes
