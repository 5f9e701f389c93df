"""How long ten typical user mistakes take to be refused (issue 11: each under 2 s on an
idle 2-core machine), through the real `mcu-onebit` command.

    .venv/bin/python benchmarks/user_errors.py [--repeat 3] [--max-seconds 2] [--json FILE]

Each mistake runs in a fresh folder, with TensorFlow made to print its start-up lines
(TF_ENABLE_ONEDNN_OPTS=1), and must end in exactly one `error: ` line on stderr and exit
code 2. Prints the median seconds of each; exits 1 when one is slower than --max-seconds
or is not a one-line error. tests/test_cli_errors.py checks the same mistakes never load
TensorFlow, the reason they are quick.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# arguments -> a word the error names; {tmp} is a fresh folder, {file} a file in it that is not a model
MISTAKES = {
    "convert a missing model": (["convert", "{tmp}/nope.h5"], "not found"),
    "convert a folder": (["convert", "{tmp}"], "is a folder"),
    "convert for an unknown board": (["convert", "{tmp}/nope.h5", "--board", "nosuchboard"], "unknown board"),
    "convert --out onto a file": (["convert", "{file}", "--out", "{file}"], "is a file"),
    "convert with negative table flash": (["convert", "{file}", "--table-flash", "-1"], "--table-flash"),
    "inspect a folder": (["inspect", "{tmp}"], "is a folder"),
    "inspect a missing graph": (["inspect", "{tmp}/model.tflite"], "not found"),
    "train an unknown arch": (["train", "--arch", "wrn-9-1", "--out", "{tmp}/m.h5"], "wrn-9-1"),
    "train on a missing archive": (["train", "--data", "{tmp}/x.npz", "--out", "{tmp}/m.h5"], "not found"),
    "eval with a negative timeout": (["eval", "--timeout", "-1"], "--timeout"),
    "flash with nothing converted": (["flash"], "mcu-onebit convert"),
}


def arguments(case: str, folder: Path) -> list[str]:
    """The mistake's command line in `folder` (made ready: {file} exists there)."""
    (folder / "file.h5").write_bytes(b"not a model")
    return [a.format(tmp=folder, file=folder / "file.h5") for a in MISTAKES[case][0]]


def environment(home: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "TF_ENABLE_ONEDNN_OPTS": "1", "MCU_ONEBIT_HOME": str(home)}


def one_line_error(result: subprocess.CompletedProcess, word: str) -> bool:
    lines = result.stderr.strip().splitlines()
    return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mistake; the median is reported")
    parser.add_argument("--max-seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    cli = Path(sys.executable).with_name("mcu-onebit")
    figures, failed = {}, []
    for case, (_, word) in MISTAKES.items():
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                command = [str(cli), *arguments(case, folder)]
                start = time.perf_counter()
                result = subprocess.run(command, env=environment(folder / "home"), capture_output=True, text=True)
                times.append(time.perf_counter() - start)
            if not one_line_error(result, word):
                failed.append(f"{case}: not a one-line error naming {word!r}: {result.stderr.strip()!r}")
        seconds = statistics.median(times)
        figures[case] = round(seconds, 3)
        if seconds > args.max_seconds:
            failed.append(f"{case}: {seconds:.2f} s, over {args.max_seconds} s")
        print(f"{seconds:6.2f} s  {case}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"median_seconds": figures, "max_seconds": args.max_seconds}, indent=2) + "\n")
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
