"""A user's TensorFlow Lite Micro tree, and what an emulated board's TFLM firmware takes from it.

`flash --tflm PATH` and `bench --tflm PATH` (default: $MCU_ONEBIT_TFLM) accept two layouts:

- an **Arduino_TensorFlowLite library** (tensorflow/tflite-micro-arduino-examples; the
  folder with `library.properties` and `src/`): self-contained, flatbuffers, gemmlowp, ruy
  and CMSIS-NN under `src/third_party/`, TFLM's kernels under
  `src/tensorflow/lite/micro/kernels/` with the CMSIS-NN variants in `kernels/cmsis_nn/`.
  Three of its functions need the Arduino core (`DebugLog` in system_setup.cpp,
  `ticks_per_second` and `GetCurrentTimeTicks` in micro_time.cpp); the firmware gets
  stand-ins for them (STANDINS_FILE).
- a **tflite-micro checkout** (tensorflow/tflite-micro) after its
  `make -f tensorflow/lite/micro/tools/make/Makefile OPTIMIZED_KERNEL_DIR=cmsis_nn third_party_downloads`:
  TFLM's own Makefile puts the pinned flatbuffers, gemmlowp, ruy and CMSIS-NN in
  `tensorflow/lite/micro/tools/make/downloads/`, and this module takes them from there,
  so the firmware uses what that checkout's own build would. Without `cmsis_nn` there
  (the download without OPTIMIZED_KERNEL_DIR) the builtin kernels are TFLM's reference ones.

Nothing is copied: the build compiles the files where they are (the platform's builder
reads TFLM_BUILD_FILE, bench compiles them itself). The selection is TFLM's interpreter
core (its folders, less tests and test helpers) plus, for each builtin op the library runs,
that op's kernel files, the CMSIS-NN variant replacing the reference file where the tree
has one, and then all of CMSIS-NN's integer sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import OnebitError

ENV_VAR = "MCU_ONEBIT_TFLM"
TFLM_BUILD_FILE = "tflm.json"  # in a project: what boards/platform-qemu/builder/main.py compiles
STANDINS_FILE = "tflm_standins.cc"

_MICRO = "tensorflow/lite/micro"
_DOWNLOADS = f"{_MICRO}/tools/make/downloads"

# The interpreter core: every source file directly in these folders (relative to the
# folder holding tensorflow/), less _NOT_CORE. Folders a tree lacks are skipped (the
# Arduino library has no tensorflow/compiler/, tflite-micro no tensorflow/lite/schema/*.cc).
_CORE_DIRS = (
    _MICRO, f"{_MICRO}/arena_allocator", f"{_MICRO}/memory_planner", f"{_MICRO}/tflite_bridge",
    "tensorflow/lite/core/api", "tensorflow/lite/core/c", "tensorflow/lite/c", "tensorflow/lite/kernels",
    "tensorflow/lite/kernels/internal", "tensorflow/lite/schema",
    "tensorflow/compiler/mlir/lite/core/api", "tensorflow/compiler/mlir/lite/schema",
)
# Tests, test doubles, and the resolver that links every kernel.
_NOT_CORE_PREFIXES = ("test_helper", "mock_micro_graph", "recording_", "fake_micro_", "all_ops_resolver")
# Always linked from micro/kernels/: helpers every kernel (and the project's adapters) use.
_KERNEL_SUPPORT = ("kernel_util", "micro_tensor_utils")

# TFLite builtin op -> its kernel files in micro/kernels/ (stems; the first must exist,
# the others are taken where the tree has them: the *_common split differs by version).
KERNEL_FILES: dict[str, tuple[str, ...]] = {
    "ADD": ("add", "add_common"), "AVERAGE_POOL_2D": ("pooling", "pooling_common"),
    "CONCATENATION": ("concatenation",), "CONV_2D": ("conv", "conv_common"),
    "DEPTHWISE_CONV_2D": ("depthwise_conv", "depthwise_conv_common"),
    "DEQUANTIZE": ("dequantize", "dequantize_common"),
    "FULLY_CONNECTED": ("fully_connected", "fully_connected_common"),
    "HARD_SWISH": ("hard_swish", "hard_swish_common"), "LOGISTIC": ("logistic", "logistic_common"),
    "MAX_POOL_2D": ("pooling", "pooling_common"), "MAXIMUM": ("maximum_minimum",), "MEAN": ("reduce", "reduce_common"),
    "MINIMUM": ("maximum_minimum",), "MUL": ("mul", "mul_common"), "PAD": ("pad", "pad_common"),
    "PADV2": ("pad", "pad_common"), "QUANTIZE": ("quantize", "quantize_common"),
    "RELU": ("activations", "activations_common"), "RELU6": ("activations", "activations_common"),
    "RESHAPE": ("reshape", "reshape_common"), "SOFTMAX": ("softmax", "softmax_common"),
    "SQUEEZE": ("squeeze",), "STRIDED_SLICE": ("strided_slice", "strided_slice_common"),
    "SUB": ("sub", "sub_common"), "TANH": ("tanh",), "TRANSPOSE": ("transpose",),
}


@dataclass(frozen=True)
class TflmTree:
    """A usable TFLM tree: where its sources and third-party headers are."""

    path: Path  # what the user gave, resolved
    kind: str  # "arduino" or "tflite-micro"
    src: Path  # the folder holding tensorflow/
    suffix: str  # of its C++ sources: ".cpp" (Arduino) or ".cc"
    include_dirs: tuple[Path, ...]
    cmsis_nn: Path | None  # the CMSIS-NN folder (Include/, Source/) when the tree has one
    defines: tuple[str, ...]  # preprocessor definitions its sources expect

    @property
    def planner_library(self) -> str:
        """converters/tflm_planner.py's name for this library's kernels' scratch requests."""
        return "arduino" if self.kind == "arduino" else "tflm"

    @property
    def kernels(self) -> str:
        """The builtin kernels this tree's firmware runs: "cmsis_nn" or "reference"."""
        return "cmsis_nn" if self.cmsis_nn is not None else "reference"

    def describe(self) -> str:
        return f"{self.kind} tree {self.path} ({self.kernels} kernels)"


def _fail(path: Path, what: str) -> OnebitError:
    return OnebitError(f"--tflm {path}: {what}")


def _missing(path: Path, root: Path, relative: tuple[str, ...], hint: str) -> None:
    absent = [r for r in relative if not (root / r).exists()]
    if absent:
        raise _fail(path, f"no {', '.join(absent)} in it; {hint}")


def locate(path: str | Path | None, needed_for: str) -> TflmTree:
    """The TFLM tree at `path`; OnebitError naming what is missing (`needed_for` says why a
    tree is needed when none is given). Looks only at files, so it runs before anything
    heavy is imported."""
    if path is None or str(path) == "":
        raise OnebitError(f"{needed_for} needs a TensorFlow Lite Micro tree: pass --tflm PATH (an "
                          f"Arduino_TensorFlowLite library or a tflite-micro checkout) or set {ENV_VAR}")
    given = Path(path).expanduser()
    if not given.is_dir():
        raise _fail(given, "no such folder")
    root = given.resolve()
    if (root / "library.properties").is_file():
        src = root / "src"
        third = "src/third_party"
        _missing(given, root, (f"src/{_MICRO}/micro_interpreter.cpp", f"{third}/flatbuffers/include/flatbuffers/flatbuffers.h",
                               f"{third}/gemmlowp/fixedpoint/fixedpoint.h", f"{third}/ruy/ruy/profiler/instrumentation.h"),
                 "an Arduino_TensorFlowLite library has its TFLM sources under src/")
        cmsis = src / "third_party" / "cmsis_nn"
        has_cmsis = (cmsis / "Include" / "arm_nnfunctions.h").is_file() and (src / _MICRO / "kernels" / "cmsis_nn").is_dir()
        includes = [src, src / "third_party" / "flatbuffers" / "include", src / "third_party" / "gemmlowp",
                    src / "third_party" / "ruy"]
        if has_cmsis:  # its sources include both "Include/arm_nnfunctions.h" and "arm_nnfunctions.h"
            includes += [cmsis, cmsis / "Include", src / "third_party" / "cmsis",
                         src / "third_party" / "cmsis" / "CMSIS" / "Core" / "Include"]
        # ARDUINO: the library's sources were specialised for it (kernel declarations,
        # ARDUINO_EXCLUDE_CODE leaves out the Arduino-only code of every board but the
        # Nano 33 BLE, which is not defined here).
        defines = ("ARDUINO=10813", "TF_LITE_STATIC_MEMORY") + (("CMSIS_NN",) if has_cmsis else ())
        return TflmTree(root, "arduino", src, ".cpp", tuple(includes), cmsis if has_cmsis else None, defines)
    if (root / _MICRO / "micro_interpreter.cc").is_file():
        downloads = root / _DOWNLOADS
        _missing(given, root, (f"{_DOWNLOADS}/flatbuffers/include/flatbuffers/flatbuffers.h",
                               f"{_DOWNLOADS}/gemmlowp/fixedpoint/fixedpoint.h",
                               f"{_DOWNLOADS}/ruy/ruy/profiler/instrumentation.h"),
                 "run `make -f tensorflow/lite/micro/tools/make/Makefile OPTIMIZED_KERNEL_DIR=cmsis_nn "
                 "third_party_downloads` in the checkout once (it needs internet)")
        cmsis = downloads / "cmsis_nn"
        has_cmsis = (cmsis / "Include" / "arm_nnfunctions.h").is_file()
        includes = [root, downloads / "flatbuffers" / "include", downloads / "gemmlowp", downloads / "ruy"]
        if has_cmsis:
            includes += [cmsis, cmsis / "Include"]
        defines = ("TF_LITE_STATIC_MEMORY", "TF_LITE_DISABLE_X86_NEON") + (
            ("CMSIS_NN", "ARM_NN_ENABLE_F16=0", "ARM_NN_ENABLE_F32=0") if has_cmsis else ())
        return TflmTree(root, "tflite-micro", root, ".cc", tuple(includes), cmsis if has_cmsis else None, defines)
    raise _fail(given, f"neither an Arduino_TensorFlowLite library (library.properties, src/{_MICRO}/) "
                       f"nor a tflite-micro checkout ({_MICRO}/micro_interpreter.cc)")


def _core_sources(tree: TflmTree) -> list[Path]:
    arduino_only = ("system_setup", "micro_time") if tree.kind == "arduino" else ()  # STANDINS_FILE instead
    found = []
    for folder in _CORE_DIRS:
        for path in sorted((tree.src / folder).glob(f"*{tree.suffix}")):
            stem = path.stem
            if stem.endswith("_test") or stem.startswith(_NOT_CORE_PREFIXES) or stem in arduino_only:
                continue
            found.append(path)
    return found


def _kernel_sources(tree: TflmTree, library_ops: list[str]) -> list[Path]:
    kernels = tree.src / _MICRO / "kernels"
    optimized = kernels / "cmsis_nn" if tree.cmsis_nn is not None else None
    stems = list(_KERNEL_SUPPORT)
    for op in library_ops:
        if op not in KERNEL_FILES:
            raise OnebitError(f"no TFLM kernel files known for {op}; add them to KERNEL_FILES in mcu_onebit/tflm_tree.py")
        main = KERNEL_FILES[op][0]
        if not any((d / f"{main}{tree.suffix}").is_file() for d in (kernels, optimized) if d is not None):
            raise _fail(tree.path, f"no kernel for {op} ({_MICRO}/kernels/{main}{tree.suffix})")
        stems += [s for s in KERNEL_FILES[op] if s not in stems]
    chosen = []
    for stem in stems:
        for folder in (optimized, kernels):  # the CMSIS-NN file replaces the reference one
            if folder is not None and (folder / f"{stem}{tree.suffix}").is_file():
                chosen.append(folder / f"{stem}{tree.suffix}")
                break
    return chosen


def _cmsis_sources(tree: TflmTree) -> list[Path]:
    """CMSIS-NN's integer sources (as TFLM's cmsis_nn.inc builds them, float ones left out)."""
    if tree.cmsis_nn is None:
        return []
    return sorted(p for p in (tree.cmsis_nn / "Source").rglob("*.c")
                  if not p.stem.endswith(("_f16", "_f32")) and p.name != "arm_nntables_flt.c")


def sources(tree: TflmTree, library_ops: list[str]) -> list[Path]:
    """Every TFLM, kernel and CMSIS-NN source file the firmware compiles from the tree, for
    a graph whose builtin ops `library_ops` run the library's kernels."""
    return _core_sources(tree) + _kernel_sources(tree, library_ops) + _cmsis_sources(tree)


def standins(tree: TflmTree) -> str:
    """C++ for the Arduino-only functions the tree's core calls (empty for tflite-micro,
    whose debug_log, micro_time and system_setup are portable). The app owns UART0 for its
    protocol, so TFLM's log goes nowhere and its clock is the app's counter, not read."""
    if tree.kind != "arduino":
        return ""
    return (
        "/* Generated by mcu-onebit: stand-ins for the functions of the Arduino_TensorFlowLite library\n"
        " * that need the Arduino core (system_setup.cpp, micro_time.cpp); do not edit. UART0 carries the\n"
        " * app's protocol, so TFLM's log is dropped; TFLM's clock is unused (the app counts instructions). */\n"
        "#include <stdint.h>\n\n"
        "extern \"C\" void DebugLog(const char* s) { (void)s; }\n\n"
        "namespace tflite {\n"
        "uint32_t ticks_per_second() { return 0; }\n"
        "uint32_t GetCurrentTimeTicks() { return 0; }\n"
        "}  // namespace tflite\n"
    )


# C++ flags TFLM's sources need beyond the platform's (-std=c++17 -fno-exceptions -fno-rtti
# -fno-threadsafe-statics): its static registrations need no atexit records on bare metal.
CXX_FLAGS = ("-fno-use-cxa-atexit",)


def build_record(tree: TflmTree, library_ops: list[str]) -> dict:
    """What the qemu platform's builder compiles for a TFLM project (TFLM_BUILD_FILE)."""
    return {
        "tree": str(tree.path), "kind": tree.kind, "kernels": tree.kernels,
        "include_dirs": [str(d) for d in tree.include_dirs], "defines": list(tree.defines),
        "cxx_flags": list(CXX_FLAGS), "sources": [str(p) for p in sources(tree, library_ops)],
    }


def write_build_record(project: Path, tree: TflmTree, library_ops: list[str]) -> None:
    """Point the project at the tree: TFLM_BUILD_FILE and the stand-ins, written atomically."""
    from .modelfile import write_text_atomic

    write_text_atomic(project / TFLM_BUILD_FILE, json.dumps(build_record(tree, library_ops), indent=2) + "\n")
    write_text_atomic(project / "src" / STANDINS_FILE, standins(tree) or "/* tflite-micro: nothing to stand in for */\n")
