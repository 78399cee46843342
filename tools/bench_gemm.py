#!/usr/bin/env python3
"""GEMM throughput of the interpreter's split against onnxruntime and numpy.

python tools/bench_gemm.py [--repeat 100]

Per shape (BERT-base's four products at sequence 128, and three ResNet-50 convolution
GEMMs as weights x im2col columns): GFLOP/s, best and median of ``--repeat`` runs, for
onnxruntime's MatMul at 1 and 2 intra-op threads, numpy (OpenBLAS) at 1 and 2 threads,
and ``neuron_ir.kernels.parallel.matmul`` (single-threaded BLAS per chunk, one chunk
per core).  Most of the interpreter's gap to onnxruntime on BERT and ResNet is this
table's last column against its second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

from neuron_ir.kernels import parallel

SHAPES = [
    (128, 768, 768),  # BERT Q/K/V/output projections
    (128, 768, 3072),  # BERT FFN in
    (128, 3072, 768),  # BERT FFN out
    (64, 576, 3136),  # ResNet layer 1, 3x3 (weights x columns)
    (256, 2304, 196),  # ResNet layer 3, 3x3
    (512, 4608, 49),  # ResNet layer 4, 3x3
]


def rates(fn: Callable[[], object], flops: float, repeat: int) -> str:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return f"{flops / min(times) / 1e9:4.0f}/{flops / statistics.median(times) / 1e9:4.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("GFLOP/s best/median:  ort-1t  ort-2t  numpy-1t  numpy-2t  neuron-ir")
    for m, k, n in SHAPES:
        x = rng.normal(0, 1, (m, k)).astype(np.float32)
        w = rng.normal(0, 0.05, (k, n)).astype(np.float32)
        flops = 2.0 * m * k * n
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "gemm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        cells = []
        for threads in (1, 2):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            cells.append(rates(lambda s=session, x=x: s.run(None, {"x": x}), flops, args.repeat))
            del session
            time.sleep(0.1)  # let onnxruntime's worker stop spinning
        for threads in (1, 2):
            with threadpool_limits(threads):
                cells.append(rates(lambda x=x, w=w: x @ w, flops, args.repeat))
        cells.append(rates(lambda x=x, w=w: parallel.matmul(x, w), flops, args.repeat))
        print(f"{m:>4} x {k:>4} x {n:>4}:  " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
