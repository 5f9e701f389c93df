"""Board records and the projects generated for them, parametrised over the registry.

Real boards cannot be built here (their PlatformIO platforms need the registry), so the
generated project is checked as far as is possible offline: PlatformIO itself parses
its platformio.ini, the resolver registers exactly the graph's ops, the arena is the
generator's, and `flash` fails fast when the platform is missing.
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
def onebit_graph(tmp_path_factory):
    """A tiny trained 1-bit model, converted the way convert.py does it."""
    from mcu_onebit.converters.rewrite import rewrite_binary_convs
    from mcu_onebit.converters.twin import CALIBRATION_SAMPLES, convert_twin
    from mcu_onebit.datasets import load_dataset
    from mcu_onebit.modelfile import load_model
    from mcu_onebit.train import TrainConfig, train

    path = tmp_path_factory.mktemp("model") / "model.h5"
    train(TrainConfig(epochs=1), path, log=lambda *a: None)
    model, meta = load_model(path)
    dataset = load_dataset(meta.dataset)
    twin = convert_twin(model, dataset.x_train[:CALIBRATION_SAMPLES])
    onebit, _ = rewrite_binary_convs(twin, meta.binary_layers)
    return onebit


@pytest.fixture(scope="module")
def tflm(onebit_graph):
    from mcu_onebit.converters.tflm_runtime import generate

    return generate(onebit_graph, "0123456789abcdef", "model.h5")


def test_tflm_ops_match_graph(onebit_graph, tflm):
    from mcu_onebit.converters import tflite_graph as g
    from mcu_onebit.converters.onebit_conv2d import OP_NAME

    model = g.load(onebit_graph)
    names = {g.op_name(model, op) for op in model.subgraphs[0].operators}
    assert OP_NAME in names
    assert set(tflm.ops) == names - {OP_NAME}


@pytest.mark.parametrize("board_id", REAL)
def test_real_board_project(board_id, tflm, tmp_path):
    from mcu_onebit.converters.tflm_runtime import ADD_CALLS
    from mcu_onebit.project import generate_project

    board = all_boards()[board_id]
    project = generate_project(board, tflm.files, tmp_path / "project")
    started = time.monotonic()
    result = subprocess.run([pio_executable(), "project", "config", "--json-output"], cwd=project,
                            env=pio_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10, "pio project config should not touch the network"
    config = dict(json.loads(result.stdout))
    env = dict(config[f"env:{board.env_name}"])
    assert env["platform"] == board.pio_platform and env["board"] == board.pio_board
    assert env["lib_deps"] == list(board.pio_lib_deps)
    assert any(f'OB_BOARD="{board.id}"' in flag for flag in env["build_flags"])

    model_cc = (project / "src" / "model.cc").read_text()
    added = re.findall(r"resolver->(Add\w+)\(\);", model_cc)
    assert sorted(added) == sorted(ADD_CALLS[op] for op in tflm.ops)
    assert "AddCustom(ONEBIT_CONV2D_OP_NAME" in model_cc
    assert f"MicroMutableOpResolver<kOpCount>" in model_cc
    assert f"kOpCount = {len(tflm.ops) + 1};" in model_cc
    assert f"kArenaBytes = {tflm.arena_bytes};" in model_cc
    for name in ("hal_arduino.cpp", "main.c", "onebit_conv2d_tflm.cc", "model_data.cc"):
        assert (project / "src" / name).is_file()
    assert (project / "lib" / "onebit" / "onebit_conv2d.c").is_file()
    assert not (project / "linker.ld").exists()


def test_flash_fails_fast_offline(tflm, tmp_path, monkeypatch):
    from mcu_onebit import flash as flash_module
    from mcu_onebit.project import generate_project

    board = all_boards()["nano33ble"]
    project = generate_project(board, tflm.files, tmp_path / "out" / "project")
    (tmp_path / "out" / "report.json").write_text(json.dumps({"board": board.id}))
    if flash_module.platform_installed(board.pio_platform_name) or flash_module.registry_reachable():
        pytest.skip("the platform is installed or the registry is reachable here")
    started = time.monotonic()
    with pytest.raises(OnebitError, match="needs internet once"):
        flash_module.flash(project, port="/dev/null", log=lambda *a: None)
    assert time.monotonic() - started < 10
