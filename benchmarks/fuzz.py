"""Fuzzes every reader of untrusted bytes for long (tests/test_fuzz.py does it for seconds):

- each libFuzzer harness of firmware/fuzz/ (ASan and UBSan, clang from Debian) for
  --runs executions (default 10^6) from its corpus: the options parser, the kernels'
  parameter check, the serial frame receiver and dispatcher, the EnergyRunner parser;
- `inspect` on --python-runs (default 10^5) copies of a real 1-bit graph
  (tests/data/tiny_resnet_onebit.tflite) with 1 to 13 bytes changed, where any exception
  but OnebitError, or a warning, is a finding.

Prints, per target, executions, coverage (libFuzzer's cov: edges and ft: features; for the
Python reader, how many mutants were read and how many refused) and findings, and exits 1
when there is any. Inputs libFuzzer found go to --out (default: a temporary folder).

    .venv/bin/python benchmarks/fuzz.py                     # everything, about 20 minutes on 2 cores
    .venv/bin/python benchmarks/fuzz.py --only options --runs 100000
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fuzzing  # noqa: E402  (tests/fuzzing.py: the harnesses, shared with the tests)

from mcu_onebit.errors import OnebitError  # noqa: E402
from mcu_onebit.summary import inspect_file  # noqa: E402

SEED_GRAPH = Path(__file__).resolve().parents[1] / "tests" / "data" / "tiny_resnet_onebit.tflite"


def fuzz_reader(runs: int, work: Path, seed: int) -> dict:
    """`inspect` on `runs` mutants: read, refused with OnebitError, or a finding."""
    graph = work / "model.tflite"  # no report.json beside it: the graph alone
    data = SEED_GRAPH.read_bytes()
    rng = np.random.default_rng(seed)
    read = refused = 0
    findings: collections.Counter = collections.Counter()
    start = time.monotonic()
    for _ in range(runs):
        graph.write_bytes(fuzzing.mutate(data, rng))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a warning is a second line for the user: a finding
                inspect_file(graph)
            read += 1
        except OnebitError:
            refused += 1
        except Exception as exc:  # a finding: where it was raised
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            findings[f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"] += 1
    return {"target": "tflite-reader", "executions": runs, "read": read, "refused": refused,
            "seconds": round(time.monotonic() - start, 1), "findings": dict(findings)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [h.name for h in fuzzing.HARNESSES] + ["tflite-reader"]
    parser.add_argument("--only", choices=names, action="append", help="targets to fuzz [default: all]")
    parser.add_argument("--runs", type=int, default=1_000_000, help="executions per C harness")
    parser.add_argument("--python-runs", type=int, default=100_000, help="mutants for the .tflite reader")
    parser.add_argument("--seed", type=int, default=0, help="the .tflite mutants' random seed")
    parser.add_argument("--out", type=Path, help="folder for the inputs libFuzzer adds and finds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    targets = args.only or names
    out = args.out or Path(tempfile.mkdtemp(prefix="mcu-onebit-fuzz-"))
    results = []
    for harness in fuzzing.HARNESSES:
        if harness.name not in targets:
            continue
        problem = fuzzing.libfuzzer_problem()
        if problem:
            print(f"{harness.name}: not run: {problem}", file=sys.stderr)
            return 1
        work = out / harness.name
        work.mkdir(parents=True, exist_ok=True)
        run = fuzzing.run(fuzzing.build(harness, work), fuzzing.CORPUS / harness.name, work, runs=args.runs)
        results.append({"target": harness.name, "executions": run.executions, "coverage": run.coverage,
                        "features": run.features, "seconds": round(run.seconds, 1), "findings": run.findings})
        print(f"{harness.name:13s} {run.executions:>10,} executions  cov {run.coverage:>4}  ft {run.features:>5}  "
              f"{run.seconds:6.1f} s  findings: {', '.join(run.findings) or 'none'}", flush=True)
    if "tflite-reader" in targets:
        work = out / "tflite-reader"
        work.mkdir(parents=True, exist_ok=True)
        r = fuzz_reader(args.python_runs, work, args.seed)
        results.append(r)
        print(f"{'tflite-reader':13s} {r['executions']:>10,} executions  read {r['read']:,}  refused {r['refused']:,}  "
              f"{r['seconds']:6.1f} s  findings: {', '.join(f'{k} ({v})' for k, v in r['findings'].items()) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"libFuzzer's inputs: {out}")
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
