"""One bit per weight is kept through conversion (issue 4): for WRN-8-1, WRN-14-2 and
WRN-20-4 on 32x32x3 the conv weights of the 1-bit graph take at most 1/7.5 of the int8
twin's bytes, and for WRN-20-4 the whole .tflite at most 1/6. Untrained networks: sizes do
not depend on what was learned. Measured through `convert` itself, on its report."""

from __future__ import annotations

import numpy as np
import pytest

from mcu_onebit.convert import convert
from mcu_onebit.modelfile import ModelMeta, save_model
from mcu_onebit.layers import BinaryConv2D
from mcu_onebit.models import build_model


def converted_sizes(arch: str, tmp_path, **options) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = tmp_path / "images.npz"
    np.savez(data, x_train=rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(256) % 10)
    model = build_model(arch, (32, 32, 3), 10)
    binary = [layer.name for layer in model.layers if isinstance(layer, BinaryConv2D)]
    path = tmp_path / "model.h5"
    save_model(model, ModelMeta("synthetic", arch, (32, 32, 3), [str(i) for i in range(10)], binary), path)
    report = convert(path, "qemu-m4", tmp_path / "out", data=data, log=lambda *_: None, **options).report
    assert report["binary_layers"] == binary  # every conv became ONEBIT_CONV2D
    return report["sizes"]


@pytest.mark.parametrize("runtime", ["static", "tflm"])
def test_table_flash_bounds_the_channel_tables(runtime, tmp_path):
    """--table-flash: the tables (256 B a channel) take at most what it gives, 0 none; the
    default gives WRN-8-1 every table on qemu-m4's 4 MB."""
    every = converted_sizes("wrn-8-1", tmp_path / "all", runtime=runtime)
    half = converted_sizes("wrn-8-1", tmp_path / "half", runtime=runtime, table_flash=every["channel_table_bytes"] // 2)
    assert every["channel_table_bytes"] > 0 and every["channel_table_bytes"] % 256 == 0
    assert 0 < half["channel_table_bytes"] <= every["channel_table_bytes"] // 2
    assert half["constant_bytes"] < every["constant_bytes"]
    if runtime == "static":
        none = converted_sizes("wrn-8-1", tmp_path / "none", runtime=runtime, table_flash=0)
        assert none["channel_table_bytes"] == 0 and none["constant_bytes"] < half["constant_bytes"]


@pytest.mark.parametrize("arch", ["wrn-8-1", "wrn-14-2", pytest.param("wrn-20-4", marks=pytest.mark.slow)])
def test_one_bit_graph_is_at_least_7_5_times_smaller_in_conv_weights(arch, tmp_path):
    sizes = converted_sizes(arch, tmp_path)
    assert sizes["conv_weight_bytes_1bit"] * 7.5 <= sizes["conv_weight_bytes_int8"]
    if arch == "wrn-20-4":
        assert sizes["onebit_tflite_bytes"] * 6 <= sizes["twin_tflite_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["wrn-20-4", "wrn-8-1"])
def test_wrns_fit_nano33ble_with_the_static_runtime(arch, tmp_path):
    """McDonnell's CIFAR-10 network on a $25 board: flash for its 535 KB of 1-bit weights, and
    RAM once elementwise ops run in place and the receive buffer is sized for the model;
    the ResNet-8-sized one too; both in at most 0.65 of the arena TFLM's planner needs."""
    rng = np.random.default_rng(0)
    data = tmp_path / "images.npz"
    np.savez(data, x_train=rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), y_train=np.arange(256) % 10)
    model = build_model(arch, (32, 32, 3), 10)
    binary = [layer.name for layer in model.layers if isinstance(layer, BinaryConv2D)]
    path = tmp_path / "model.h5"
    save_model(model, ModelMeta("synthetic", arch, (32, 32, 3), [str(i) for i in range(10)], binary), path)
    report = convert(path, "nano33ble", tmp_path / "out", data=data, runtime="static", log=lambda *_: None).report
    assert report["budget"]["ram_margin"] > 0 and report["budget"]["flash_margin"] > 0
    assert report["memory"]["receive_buffer_bytes"] < 4096  # 3,072 input bytes and 10 outputs
    # Fused blocks as pipelines: x and a few rows, where TFLM plans three tensors per block.
    memory = report["memory"]
    assert memory["arena_bytes"] <= 0.65 * memory["tflm_plan_bytes"] < memory["arena_bytes_static_plan_unfused"]


def test_a_board_short_of_ram_gets_the_smallest_arena(tmp_path, monkeypatch):
    """Rows per kernel call may cost some arena for speed (ROWS_ARENA_SLACK); a board whose
    RAM only the smallest arena fits gets that, and one with less is refused."""
    import dataclasses

    from mcu_onebit import convert as convert_module
    from mcu_onebit.boards import get_board
    from mcu_onebit.converters.static_runtime import generate

    rng = np.random.default_rng(0)
    data = tmp_path / "images.npz"
    np.savez(data, x_train=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), y_train=np.arange(64) % 10)
    model = build_model("wrn-8-1", (32, 32, 3), 10)
    binary = [layer.name for layer in model.layers if isinstance(layer, BinaryConv2D)]
    path = tmp_path / "model.h5"
    save_model(model, ModelMeta("synthetic", "wrn-8-1", (32, 32, 3), [str(i) for i in range(10)], binary), path)
    report = convert(path, "qemu-m4", tmp_path / "roomy", data=data, runtime="static", log=lambda *_: None).report
    onebit = (tmp_path / "roomy" / "model.tflite").read_bytes()
    smallest = generate(onebit, "0" * 16, "test", rows_slack=None).plan.arena_bytes
    assert smallest < report["memory"]["arena_bytes"]  # the default trades some arena for time
    needed = report["budget"]["ram_used"] - report["memory"]["arena_bytes"] + smallest
    tight = dataclasses.replace(get_board("qemu-m4"), ram_bytes=needed)
    monkeypatch.setattr(convert_module, "get_board", lambda _: tight)
    fitted = convert(path, "qemu-m4", tmp_path / "tight", data=data, runtime="static", log=lambda *_: None).report
    assert fitted["memory"]["arena_bytes"] == smallest and fitted["budget"]["ram_margin"] == 0
    short = dataclasses.replace(tight, ram_bytes=needed - 1)
    monkeypatch.setattr(convert_module, "get_board", lambda _: short)
    with pytest.raises(convert_module.OnebitError, match="does not fit"):
        convert(path, "qemu-m4", tmp_path / "short", data=data, runtime="static", log=lambda *_: None)
