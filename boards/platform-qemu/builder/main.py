"""SCons build script of the local `qemu` platform: arm-none-eabi-* from PATH, CPU
flags from the board manifest, `upload` boots the ELF in QEMU on this terminal.

Board manifest keys beyond PlatformIO's standard ones (written by mcu_onebit/project.py):
build.fpu (GCC -mfpu, absent for soft float), build.float_abi, build.icount_shift
(QEMU -icount shift, also given to C as OB_ICOUNT_SHIFT), upload.qemu_machine.

A TFLM project (converted with --runtime tflm) holds tflm.json, written by `flash --tflm`
(mcu_onebit/tflm_tree.py): the user's TFLM tree's sources, include folders, definitions
and C++ flags. They are compiled where they are, into $BUILD_DIR/tflm/.
"""

import json
import os

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment

env = DefaultEnvironment()
board = env.BoardConfig()

cpu_flags = ["-mcpu=%s" % board.get("build.cpu"), "-mthumb", "-mfloat-abi=%s" % board.get("build.float_abi")]
if board.get("build.fpu", None):
    cpu_flags.append("-mfpu=%s" % board.get("build.fpu"))

env.Replace(
    AR="arm-none-eabi-ar",
    AS="arm-none-eabi-as",
    CC="arm-none-eabi-gcc",
    CXX="arm-none-eabi-g++",
    GDB="arm-none-eabi-gdb",
    OBJCOPY="arm-none-eabi-objcopy",
    RANLIB="arm-none-eabi-ranlib",
    SIZETOOL="arm-none-eabi-size",
    ARFLAGS=["rc"],
    PROGNAME="firmware",
    PROGSUFFIX=".elf",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
)

env.Append(
    ASFLAGS=cpu_flags,
    CCFLAGS=cpu_flags + ["-O2", "-ffunction-sections", "-fdata-sections", "-Wall"],
    CXXFLAGS=["-std=c++17", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics"],
    CPPDEFINES=[
        ("F_CPU", "$BOARD_F_CPU"),
        ("OB_ICOUNT_SHIFT", board.get("build.icount_shift")),
        ("OB_BOARD", env.StringifyMacro(env.subst("$BOARD"))),
    ],
    LINKFLAGS=cpu_flags + ["--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"],
    LIBS=["m"],
)

# The linker script ships with the project (build.ldscript, relative to the project).
if "LDSCRIPT_PATH" in env and not os.path.isabs(env.subst("$LDSCRIPT_PATH")):
    env.Replace(LDSCRIPT_PATH=os.path.join(env.subst("$PROJECT_DIR"), env.subst("$LDSCRIPT_PATH")))

tflm_record = os.path.join(env.subst("$PROJECT_DIR"), "tflm.json")
if os.path.isfile(tflm_record):
    with open(tflm_record) as handle:
        tflm = json.load(handle)
    # Definitions such as TF_LITE_STATIC_MEMORY change TFLM's structs: every file of the
    # firmware (the project's adapters included) must see the same ones.
    env.Append(CPPPATH=tflm["include_dirs"], CXXFLAGS=tflm["cxx_flags"],
               CPPDEFINES=[tuple(d.split("=", 1)) if "=" in d else d for d in tflm["defines"]])
    env.Append(PIOBUILDFILES=[
        env.Object(os.path.join("$BUILD_DIR", "tflm", os.path.relpath(source, tflm["tree"]) + ".o"), source)
        for source in tflm["sources"]])

target_elf = env.BuildProgram()

target_size = env.Alias("size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE"))
AlwaysBuild(target_size)

qemu_command = " ".join(
    [
        "qemu-system-arm -M %s" % board.get("upload.qemu_machine"),
        "-display none -monitor none -semihosting-config enable=on,target=native",
        "-icount shift=%d,align=off,sleep=off" % board.get("build.icount_shift"),
        "-serial stdio -kernel $SOURCE",
    ]
)
target_upload = env.Alias("upload", target_elf, env.VerboseAction(qemu_command, "Booting $SOURCE in QEMU (Ctrl-C ends it)"))
AlwaysBuild(target_upload)

Default([target_elf])
