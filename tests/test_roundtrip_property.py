"""Property: random small ONNX graphs survive import -> print -> parse -> print, and
their constants come back bit-identical, special float values included."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import neuron_ir
from dialects.onnx import ConstantOp
from neuron_ir.ir.attrs import constant_array

DTYPES = [
    np.dtype(np.float32),
    np.dtype(np.float16),
    np.dtype(np.float64),
    np.dtype(ml_dtypes.bfloat16),
    np.dtype(np.bool_),
    np.dtype(np.int64),
    np.dtype(np.int32),
    np.dtype(np.int8),
    np.dtype(np.uint8),
]

SPECIAL = [
    0.0,
    -0.0,
    np.inf,
    -np.inf,
    np.nan,
    1e20,
    -3e38,
    16777217.0,
    2.0**60,
    1e-40,
    0.1,
    1 / 3,
    65504.0,
    1e-7,
]


@st.composite
def arrays(draw, dtype: np.dtype) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    size = int(np.prod(shape, dtype=np.int64))
    if dtype == np.bool_:
        values = draw(st.lists(st.booleans(), min_size=size, max_size=size))
        return np.array(values, dtype=dtype).reshape(shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = draw(
            st.lists(st.integers(int(info.min), int(info.max)), min_size=size, max_size=size)
        )
        return np.array(values, dtype=dtype).reshape(shape)
    floats = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, width=64))
    values = draw(st.lists(floats, min_size=size, max_size=size))
    with np.errstate(over="ignore"):
        array = np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
    if draw(st.booleans()) and size > 1:
        array = np.full(shape, array.reshape(-1)[0], dtype=dtype)  # splat constants
    return array


@st.composite
def models(draw) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    n_consts = draw(st.integers(1, 4))
    inits, nodes, outputs, expected = [], [], [], {}
    for k in range(n_consts):
        dtype = draw(st.sampled_from(DTYPES))
        data = draw(arrays(dtype))
        name = f"c{k}"
        expected[name] = data
        elem = helper.np_dtype_to_tensor_dtype(dtype)
        if draw(st.booleans()):
            inits.append(numpy_helper.from_array(data, name))
            src = name
        else:
            src = f"{name}_node"
            expected[src] = data
            nodes.append(
                helper.make_node("Constant", [], [src], value=numpy_helper.from_array(data, src))
            )
            del expected[name]
        out = f"y{k}"
        nodes.append(helper.make_node("Identity", [src], [out], name=f"id/{k}"))
        outputs.append(helper.make_tensor_value_info(out, elem, data.shape))
    x = helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, draw(st.sampled_from([["batch", 3], [2, "n"], [1]]))
    )
    nodes.append(helper.make_node("Relu", ["x"], ["rx"], name="relu"))
    outputs.append(helper.make_tensor_value_info("rx", onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "random", [x], outputs, inits)
    opset = draw(st.sampled_from([13, 17, 21, 28]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), expected


def _constants(module) -> dict[str, np.ndarray]:
    return {
        op.attributes["onnx.name"].data: constant_array(op.value)
        for op in module.walk()
        if isinstance(op, ConstantOp)
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_import_print_parse_print_is_stable_and_bit_exact(case):
    model, expected = case
    module = neuron_ir.import_model(model)
    text = neuron_ir.print_ir(module)
    reparsed = neuron_ir.parse_ir(text)
    assert neuron_ir.print_ir(reparsed) == text
    for consts in (_constants(module), _constants(reparsed)):
        assert set(consts) == set(expected)
        for name, data in expected.items():
            got = consts[name]
            assert got.dtype == data.dtype and got.shape == data.shape, name
            assert got.tobytes() == data.tobytes(), name
