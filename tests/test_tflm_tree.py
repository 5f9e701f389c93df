"""mcu_onebit/tflm_tree.py without a real TFLM: the two tree layouts rebuilt from empty
files in tmp_path, what the firmware compiles from each, the one-line errors for trees
that are not usable, and which kernel the generated resolver registers for each op."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_one_line_error, cli_env, run_cli

from mcu_onebit import tflm_tree
from mcu_onebit.errors import OnebitError

MICRO = "tensorflow/lite/micro"


def _touch(root: Path, *relative: str) -> None:
    for name in relative:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def arduino_tree(root: Path, cmsis: bool = True) -> Path:
    """The Arduino_TensorFlowLite layout: library.properties, src/ with .cpp sources."""
    _touch(root, "library.properties",
           *(f"src/{MICRO}/{name}.cpp" for name in ("micro_interpreter", "micro_allocator", "system_setup", "micro_time",
                                                     "debug_log", "test_helpers", "mock_micro_graph", "all_ops_resolver",
                                                     "recording_micro_allocator", "fake_micro_context")),
           f"src/{MICRO}/memory_planner/greedy_memory_planner.cpp", "src/tensorflow/lite/core/c/common.cpp",
           "src/tensorflow/lite/schema/schema_utils.cpp",
           "src/tensorflow/lite/experimental/microfrontend/lib/fft.cpp",
           *(f"src/{MICRO}/kernels/{name}.cpp" for name in ("kernel_util", "micro_tensor_utils", "add", "add_common",
                                                             "reduce", "reduce_common", "pad", "conv", "conv_common")),
           "src/third_party/flatbuffers/include/flatbuffers/flatbuffers.h",
           "src/third_party/gemmlowp/fixedpoint/fixedpoint.h", "src/third_party/ruy/ruy/profiler/instrumentation.h")
    if cmsis:
        _touch(root, f"src/{MICRO}/kernels/cmsis_nn/add.cpp", f"src/{MICRO}/kernels/cmsis_nn/conv.cpp",
               "src/third_party/cmsis_nn/Include/arm_nnfunctions.h",
               "src/third_party/cmsis_nn/Source/BasicMathFunctions/arm_elementwise_add_s8.c",
               "src/third_party/cmsis_nn/Source/ActivationFunctions/arm_nn_activation_f32.c")
    return root


def tflite_micro_tree(root: Path, downloads: bool = True, cmsis: bool = True) -> Path:
    """A tflite-micro checkout: .cc sources; third-party code in make's downloads/."""
    _touch(root, *(f"{MICRO}/{name}.cc" for name in ("micro_interpreter", "micro_interpreter_test", "system_setup",
                                                      "micro_time", "debug_log", "test_helpers")),
           "tensorflow/compiler/mlir/lite/schema/schema_utils.cc", f"{MICRO}/kernels/kernel_util.cc",
           f"{MICRO}/kernels/add.cc", f"{MICRO}/kernels/add_common.cc", f"{MICRO}/kernels/cmsis_nn/add.cc")
    downloads_dir = f"{MICRO}/tools/make/downloads"
    if downloads:
        _touch(root, f"{downloads_dir}/flatbuffers/include/flatbuffers/flatbuffers.h",
               f"{downloads_dir}/gemmlowp/fixedpoint/fixedpoint.h", f"{downloads_dir}/ruy/ruy/profiler/instrumentation.h")
    if downloads and cmsis:
        _touch(root, f"{downloads_dir}/cmsis_nn/Include/arm_nnfunctions.h",
               f"{downloads_dir}/cmsis_nn/Source/ConvolutionFunctions/arm_convolve_s8.c",
               f"{downloads_dir}/cmsis_nn/Source/SoftmaxFunctions/arm_softmax_f16.c")
    return root


def _relative(tree: tflm_tree.TflmTree, paths) -> set[str]:
    return {str(p.relative_to(tree.path)) for p in paths}


def test_arduino_library_selection_standins_and_flags(tmp_path):
    tree = tflm_tree.locate(arduino_tree(tmp_path / "Arduino_TensorFlowLite"), "test")
    assert (tree.kind, tree.kernels) == ("arduino", "cmsis_nn")
    chosen = _relative(tree, tflm_tree.sources(tree, ["ADD", "MEAN"]))
    # The core, less tests, test doubles, the every-kernel resolver and the Arduino-only files.
    assert {f"src/{MICRO}/micro_interpreter.cpp", f"src/{MICRO}/micro_allocator.cpp", f"src/{MICRO}/debug_log.cpp",
            f"src/{MICRO}/memory_planner/greedy_memory_planner.cpp", "src/tensorflow/lite/core/c/common.cpp",
            "src/tensorflow/lite/schema/schema_utils.cpp"} <= chosen
    for left_out in ("system_setup", "micro_time", "test_helpers", "mock_micro_graph", "all_ops_resolver",
                     "recording_micro_allocator", "fake_micro_context"):
        assert f"src/{MICRO}/{left_out}.cpp" not in chosen
    assert not [p for p in chosen if "microfrontend" in p]
    # Kernels of the ops asked for only; CMSIS-NN's ADD replaces the reference one.
    assert f"src/{MICRO}/kernels/cmsis_nn/add.cpp" in chosen and f"src/{MICRO}/kernels/add.cpp" not in chosen
    assert {f"src/{MICRO}/kernels/add_common.cpp", f"src/{MICRO}/kernels/reduce.cpp",
            f"src/{MICRO}/kernels/reduce_common.cpp", f"src/{MICRO}/kernels/kernel_util.cpp"} <= chosen
    assert not [p for p in chosen if "/kernels/pad" in p or "/kernels/conv" in p or "cmsis_nn/conv" in p]
    # CMSIS-NN's integer sources, not its float ones.
    assert "src/third_party/cmsis_nn/Source/BasicMathFunctions/arm_elementwise_add_s8.c" in chosen
    assert not [p for p in chosen if p.endswith("_f32.c")]
    assert {"ARDUINO=10813", "TF_LITE_STATIC_MEMORY", "CMSIS_NN"} <= set(tree.defines)
    standins = tflm_tree.standins(tree)
    for function in ('extern "C" void DebugLog(const char* s)', "uint32_t ticks_per_second()",
                     "uint32_t GetCurrentTimeTicks()"):
        assert function in standins


def test_arduino_library_without_cmsis_nn_runs_reference_kernels(tmp_path):
    tree = tflm_tree.locate(arduino_tree(tmp_path / "lib", cmsis=False), "test")
    assert tree.kernels == "reference" and "CMSIS_NN" not in tree.defines
    chosen = _relative(tree, tflm_tree.sources(tree, ["ADD"]))
    assert f"src/{MICRO}/kernels/add.cpp" in chosen and not [p for p in chosen if "cmsis" in p]


def test_tflite_micro_checkout_takes_makes_downloads(tmp_path):
    tree = tflm_tree.locate(tflite_micro_tree(tmp_path / "tflite-micro"), "test")
    assert (tree.kind, tree.kernels) == ("tflite-micro", "cmsis_nn")
    downloads = tree.path / MICRO / "tools/make/downloads"
    assert {downloads / "flatbuffers/include", downloads / "gemmlowp", downloads / "ruy", downloads / "cmsis_nn",
            downloads / "cmsis_nn/Include"} <= set(tree.include_dirs)
    chosen = _relative(tree, tflm_tree.sources(tree, ["ADD"]))
    # Portable here: debug_log, micro_time and system_setup are compiled, nothing stands in.
    assert {f"{MICRO}/micro_interpreter.cc", f"{MICRO}/system_setup.cc", f"{MICRO}/micro_time.cc",
            "tensorflow/compiler/mlir/lite/schema/schema_utils.cc", f"{MICRO}/kernels/cmsis_nn/add.cc",
            f"{MICRO}/kernels/add_common.cc",
            f"{MICRO}/tools/make/downloads/cmsis_nn/Source/ConvolutionFunctions/arm_convolve_s8.c"} <= chosen
    assert f"{MICRO}/micro_interpreter_test.cc" not in chosen and f"{MICRO}/kernels/add.cc" not in chosen
    assert not [p for p in chosen if p.endswith("_f16.c")]
    assert tflm_tree.standins(tree) == ""
    assert "TF_LITE_STATIC_MEMORY" in tree.defines and "ARDUINO=10813" not in tree.defines


def test_tflite_micro_checkout_without_cmsis_nn(tmp_path):
    tree = tflm_tree.locate(tflite_micro_tree(tmp_path / "t", cmsis=False), "test")
    assert tree.kernels == "reference"
    assert f"{MICRO}/kernels/add.cc" in _relative(tree, tflm_tree.sources(tree, ["ADD"]))


@pytest.mark.parametrize("make, words", [
    (lambda root: root.mkdir(), ("neither an Arduino_TensorFlowLite library", "nor a tflite-micro checkout")),
    (lambda root: tflite_micro_tree(root, downloads=False), ("flatbuffers", "third_party_downloads")),
    (lambda root: (arduino_tree(root), (root / "src/third_party/gemmlowp/fixedpoint/fixedpoint.h").unlink()),
     ("gemmlowp", "src/")),
])
def test_unusable_trees_say_what_is_missing(tmp_path, make, words):
    root = tmp_path / "tree"
    make(root)
    with pytest.raises(OnebitError) as info:
        tflm_tree.locate(root, "test")
    assert str(root) in str(info.value) and "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_no_tree_and_a_missing_kernel(tmp_path):
    with pytest.raises(OnebitError, match="MCU_ONEBIT_TFLM"):
        tflm_tree.locate(None, "flash")
    with pytest.raises(OnebitError, match="no such folder"):
        tflm_tree.locate(tmp_path / "absent", "flash")
    tree = tflm_tree.locate(arduino_tree(tmp_path / "lib"), "test")
    with pytest.raises(OnebitError, match="no kernel for SOFTMAX"):
        tflm_tree.sources(tree, ["SOFTMAX"])


def test_build_record_is_what_the_builder_reads(tmp_path):
    """tflm.json holds the keys boards/platform-qemu/builder/main.py reads, absolute paths."""
    tree = tflm_tree.locate(arduino_tree(tmp_path / "lib"), "test")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    tflm_tree.write_build_record(project, tree, ["ADD"])
    record = json.loads((project / tflm_tree.TFLM_BUILD_FILE).read_text())
    builder = (Path(__file__).parents[1] / "boards/platform-qemu/builder/main.py").read_text()
    for key in ("tree", "include_dirs", "defines", "cxx_flags", "sources"):
        assert f'tflm["{key}"]' in builder
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in record["sources"])
    assert "DebugLog" in (project / "src" / tflm_tree.STANDINS_FILE).read_text()


def _fake_tflm_project(tmp_path: Path) -> Path:
    """What `convert --runtime tflm --board qemu-m4` leaves, as far as `flash` reads it."""
    out = tmp_path / "out"
    (out / "project").mkdir(parents=True)
    (out / "project" / "platformio.ini").write_text("; fake\n")
    (out / "report.json").write_text(json.dumps({"board": "qemu-m4", "runtime": "tflm", "model_hash": "0" * 16,
                                                 "tflm_kernels": {"ADD": "project", "MEAN": "project"}}))
    return out


def test_flash_with_an_unusable_tree_is_one_line(tmp_path):
    out = _fake_tflm_project(tmp_path)
    env = {k: v for k, v in cli_env(MCU_ONEBIT_HOME=str(tmp_path / "home")).items() if k != tflm_tree.ENV_VAR}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("flash", "--project", str(out), "--tflm", str(empty), env=env),
                          str(empty), "neither an Arduino_TensorFlowLite library")
    assert_one_line_error(run_cli("flash", "--project", str(out), env=env), "--tflm PATH", tflm_tree.ENV_VAR)
    assert_one_line_error(run_cli("flash", "--project", str(out), env={**env, tflm_tree.ENV_VAR: str(tmp_path / "no")}),
                          "no such folder")
    assert not (out / "project" / tflm_tree.TFLM_BUILD_FILE).exists()
    assert_one_line_error(run_cli("bench", "--tflm", str(empty), env=env), "neither an Arduino_TensorFlowLite library")


# --- the generated resolver -----------------------------------------------------------


@pytest.fixture(scope="module")
def elementwise_graph():
    """A graph with ADD, MUL, PAD and MEAN (int8), built without TensorFlow."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(shape, index, name, dtype=schema.TensorType.INT8, buffer=0):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), dtype, buffer, name
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = [0.05], [index - 3]
        t.quantization = q
        return t

    m = schema.ModelT()
    m.version = 3
    buffers = [schema.BufferT() for _ in range(3)]
    buffers[1].data = np.array([[0, 0], [1, 1], [1, 1], [0, 0]], "<i4").tobytes()
    buffers[2].data = np.array([1, 2], "<i4").tobytes()
    m.buffers = buffers
    sub = schema.SubGraphT()
    sub.tensors = [tensor((1, 4, 4, 8), 0, "x"), tensor((1, 4, 4, 8), 1, "a"), tensor((1, 4, 4, 8), 2, "b"),
                   tensor((4, 2), 3, "pads", schema.TensorType.INT32, 1), tensor((1, 6, 6, 8), 2, "p"),
                   tensor((2,), 5, "axes", schema.TensorType.INT32, 2), tensor((1, 8), 6, "y")]
    codes = []
    for builtin in (schema.BuiltinOperator.ADD, schema.BuiltinOperator.MUL, schema.BuiltinOperator.PAD,
                    schema.BuiltinOperator.MEAN):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        codes.append(code)
    m.operatorCodes = codes

    options = [(schema.BuiltinOptions.AddOptions, schema.AddOptionsT()),
               (schema.BuiltinOptions.MulOptions, schema.MulOptionsT()),
               (schema.BuiltinOptions.PadOptions, schema.PadOptionsT()),
               (schema.BuiltinOptions.ReducerOptions, schema.ReducerOptionsT())]

    def op(code, inputs, outputs):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options[code]
        return o

    sub.operators = [op(0, [0, 0], [1]), op(1, [1, 0], [2]), op(2, [2, 3], [4]), op(3, [4, 5], [6])]
    sub.inputs, sub.outputs = [0], [6]
    m.subgraphs = [sub]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("kernels", ["project", "library"])
def test_resolver_registers_the_chosen_kernels(elementwise_graph, kernels):
    from mcu_onebit.converters.tflm_runtime import generate, library_kernels

    model = generate(elementwise_graph, "0" * 16, "g.h5", kernels=kernels)
    source = model.files["model.cc"]
    for op, method in (("ADD", "AddAdd"), ("MUL", "AddMul"), ("PAD", "AddPad")):
        assert model.kernels[op] == kernels
        project_call = f"resolver->{method}(*onebit::Register_{op}());"
        assert (project_call in source) == (kernels == "project")
        assert (f"resolver->{method}();" in source) == (kernels == "library")
        assert (f'#include "{op.lower()}_tflm.h"' in source) == (kernels == "project")
    # MEAN: the project's in both (the Arduino library's differs from the twin), through FindOp.
    assert model.kernels["MEAN"] == "project" and "return onebit::Register_MEAN();" in source
    assert "resolver->AddMean();" in source
    linked = library_kernels(model.kernels)
    assert linked == (["MEAN"] if kernels == "project" else ["ADD", "MEAN", "MUL", "PAD"])
    for name in ("add_tflm.cc", "mul_tflm.cc", "pad_tflm.cc", "elementwise_tflm.h"):
        assert name in model.files
