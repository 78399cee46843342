#!/usr/bin/env python3
"""Import and print benchmark: time and peak memory of import_model and print_ir.

python tools/bench_import.py                 # builds the BERT-base zoo model (~440 MB)
python tools/bench_import.py --model m.onnx  # any model

The measurement runs in a fresh child process so that building the model does not
count towards the peak; peak memory is the child's peak RSS growth over its RSS
after importing the libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import neuron_ir

def status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

path = sys.argv[1]
base = status_kib("VmRSS")
t0 = time.perf_counter()
module = neuron_ir.import_model(path)
t1 = time.perf_counter()
text = neuron_ir.print_ir(module, elide_constants_over=1024)
t2 = time.perf_counter()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent at fork.
peak = status_kib("VmHWM")
print(json.dumps({"import_s": t1 - t0, "print_s": t2 - t1, "peak_kib": peak,
                  "base_kib": base, "ops": sum(1 for _ in module.walk()),
                  "text_bytes": len(text)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="ONNX file (default: build bert_base)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            import onnx

            from neuron_ir import zoo

            start = time.perf_counter()
            path = Path(tmp) / "bert_base.onnx"
            onnx.save(zoo.build("bert_base"), path)
            print(f"built bert_base in {time.perf_counter() - start:.1f} s")
        size = os.path.getsize(path)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = (r["peak_kib"] - r["base_kib"]) * 1024
    print(f"model: {path.name}, {size / 2**20:.1f} MiB, {r['ops']} ops")
    print(f"import:  {r['import_s']:.2f} s")
    print(
        f"print (constants elided): {r['print_s']:.2f} s, {r['text_bytes'] / 2**20:.2f} MiB of text"
    )
    print(
        f"peak memory over baseline: {growth / 2**20:.0f} MiB = {growth / size:.2f}x the file "
        f"(target < 3x); absolute peak RSS {r['peak_kib'] / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
