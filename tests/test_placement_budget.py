"""Weight placement and its price, end to end through ``neuron_ir.compile``.

* SBUF placement respects the profile's weight budget exactly: weights (in the bytes they
  take on the device: bf16 for fp32 matmul weights under autocast) are cached in SBUF
  first-fit in order of first use while the running total stays within
  ``sbuf_weight_bytes`` (a weight that exactly fills it still fits), the rest go to HBM;
  checked against that rule computed independently on random weight sizes.
* The cost model charges what is in HBM: an op reading an HBM weight costs at least
  the weight's bytes over the core's DRAM bandwidth, an op reading only SBUF weights
  does not pay for them, and the simulated latency includes every HBM stream.
"""

from __future__ import annotations

import numpy as np
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import neuron_ir
from neuron_ir.target import get_target
from neuron_ir.target.cost import core_dram_bandwidth

K = 256  # rows of every weight: a weight of n columns holds K * n float32
STORED = 2  # bytes an fp32 matmul weight takes on the device under bf16 autocast


def _matmuls(columns: list[int], seed: int = 0):
    """y_i = x @ w_i for weights of K x columns[i] (distinct, non-trivial values)."""
    rng = np.random.default_rng(seed)
    nodes, inits, outs = [], [], []
    for i, n in enumerate(columns):
        w = (rng.standard_normal((K, n)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"mm{i}"))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, n]))
    graph = helper.make_graph(
        nodes,
        "weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        outs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _weights(compiled):
    """(memory, bytes) of every nc.weight, in program order."""
    out = []
    for op in compiled.module.walk():
        if op.name == "nc.weight":
            shape = op.results[0].type.get_shape()
            out.append((op.properties["memory"].data, int(np.prod(shape)) * STORED))
    return out


def _expected_placement(sizes: list[int], budget: int) -> list[str]:
    used, out = 0, []
    for size in sizes:
        if used + size <= budget:
            used += size
            out.append("sbuf")
        else:
            out.append("hbm")
    return out


def _compile(columns, seed=0):
    model = _matmuls(columns, seed)
    x = np.random.default_rng(seed + 1).standard_normal((1, K)).astype(np.float32)
    compiled = neuron_ir.compile(model, "inf1", input_shapes={"x": (1, K)})
    assert not compiled.report.cpu_ops
    want = neuron_ir.run(neuron_ir.import_model(model), {"x": x})
    got = compiled.run({"x": x})
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    return compiled


def test_weights_that_exactly_fill_the_budget_stay_in_sbuf_and_the_next_goes_to_hbm():
    budget = get_target("inf1").sbuf_weight_bytes
    half = budget // 2 // (STORED * K)  # two weights of exactly half the budget each
    assert 2 * half * STORED * K == budget
    compiled = _compile([half, half, 16, half])
    placed = _weights(compiled)
    assert [m for m, _ in placed] == ["sbuf", "sbuf", "hbm", "hbm"]
    assert sum(b for m, b in placed if m == "sbuf") == budget


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 5000), min_size=2, max_size=5))
def test_sbuf_placement_is_greedy_within_the_budget(columns):
    budget = get_target("inf1").sbuf_weight_bytes
    placed = _weights(_compile(columns))
    sizes = [b for _, b in placed]
    assert sizes == [K * n * STORED for n in columns]
    assert [m for m, _ in placed] == _expected_placement(sizes, budget)
    assert sum(b for m, b in placed if m == "sbuf") <= budget


def test_est_time_charges_hbm_weights_and_latency_includes_them():
    profile = get_target("inf1")
    budget = profile.sbuf_weight_bytes
    big = budget // (STORED * K)  # fills the whole budget: every later weight is in HBM
    compiled = _compile([big, 1024, 2048])
    bandwidth = core_dram_bandwidth(profile)
    matmuls = [op for op in compiled.module.walk() if op.name == "nc.matmul"]
    assert len(matmuls) == 3
    streamed = 0.0
    for op, (memory, nbytes) in zip(matmuls, _weights(compiled), strict=True):
        reads = [r.data for r in op.properties["reads"].data]
        est = op.properties["est_time"].value.data
        assert reads == ["sbuf", memory]
        if memory == "hbm":
            floor = nbytes / bandwidth
            assert est >= floor + profile.dispatch_overhead_s, (nbytes, est)
            streamed += floor
        else:
            # an SBUF weight is free to read: the op is compute-bound and tiny
            assert est < nbytes / bandwidth / 10, (nbytes, est)
    assert streamed > 0
    assert compiled.simulated_latency >= streamed
