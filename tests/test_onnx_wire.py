"""The wire-format scan that imports a model file's weights without protobuf's copies.

The scan's output is checked against protobuf's own parse of the same bytes, on models
whose fields come in any order (protobuf accepts any), split across repeated graph
fields, with names, types and sizes around the threshold; and a file imported through
the scan must give the IR a ModelProto gives.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import neuron_ir
from dialects.onnx import ConstantOp
from neuron_ir import importer, zoo
from neuron_ir.errors import ModelLoadError
from neuron_ir.ir.attrs import constant_array
from neuron_ir.onnx_wire import ByteSource, strip_weights

THRESHOLD = importer.STRIP_BYTES
ITEMSIZES = importer._PLAIN_ITEMSIZES
TYPED_FIELDS = [
    "float_data",
    "int32_data",
    "string_data",
    "int64_data",
    "double_data",
    "uint64_data",
    "external_data",
]
TYPES = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.UINT8]


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, body: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(body)) + body


def _fields_shuffled(message, draw_order) -> bytes:
    """``message`` serialized one field (one repeated element) at a time, in the
    order ``draw_order`` picks: the same message to protobuf, another byte layout."""
    parts = []
    for fd, value in message.ListFields():
        values = list(value) if fd.is_repeated else [value]
        for v in values:
            single = type(message)()
            if fd.is_repeated and fd.type == fd.TYPE_MESSAGE:
                getattr(single, fd.name).add().CopyFrom(v)
            elif fd.is_repeated:
                getattr(single, fd.name).append(v)
            elif fd.type == fd.TYPE_MESSAGE:
                getattr(single, fd.name).CopyFrom(v)
            else:
                setattr(single, fd.name, v)
            parts.append(single.SerializeToString())
    return b"".join(draw_order(parts))


@st.composite
def tensors(draw, name):
    data_type = draw(st.sampled_from(TYPES))
    np_type = np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    # Sizes on both sides of the threshold, and scalars.
    dims = draw(
        st.one_of(
            st.lists(st.integers(1, 6), max_size=3),  # small, and scalars
            st.lists(st.integers(1, 4), max_size=2).map(lambda d: [*d, 300]),  # >1 KB
            st.integers(-1, 1).map(lambda d: [THRESHOLD // np_type.itemsize + d]),
        )
    )
    count = int(np.prod(dims))
    values = np.arange(count).astype(np_type).reshape(dims)
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    forms = ["raw", "raw", "raw", "typed", "raw+typed", "raw+doc", "short", "external", "raw twice"]
    form = draw(st.sampled_from(forms))
    if form.endswith("typed"):
        t.CopyFrom(helper.make_tensor(t.name, data_type, dims, values.reshape(-1).tolist()))
    if form != "typed":
        raw = values.tobytes()
        t.raw_data = raw[:-1] if form == "short" and raw else raw
        if form == "raw+doc":
            t.doc_string = "weight"
        if form == "external":
            t.data_location = TensorProto.EXTERNAL
    # A raw data field that a later one replaces (protobuf keeps the last).
    decoy = _len_field(9, b"\x07" * len(t.raw_data)) if form == "raw twice" else b""
    return t, decoy


@st.composite
def model_bytes(draw):
    """(serialized model, the same model as protobuf reads it, the names of the
    tensors whose raw data field comes twice)."""
    names = draw(
        st.lists(
            st.sampled_from(["w0", "w1", "w2", "bias", "emb"]), min_size=1, max_size=5, unique=True
        )
    )
    if len(names) > 1 and draw(st.integers(0, 4)) == 0:
        names[-1] = names[0]  # now and then, a duplicate
    drawn = [draw(tensors(name)) for name in names]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.doc_string = "doc"
    del model.graph.node[:]
    shuffle = lambda parts: draw(st.permutations(parts))  # noqa: E731
    # The graph's own fields (nodes, I/O) and its initializers, in any order, and
    # split over up to three repeated graph fields, which protobuf merges.
    graph_parts = [
        _len_field(1, helper.make_node("Identity", ["x"], ["y"]).SerializeToString()),
        _len_field(11, model.graph.input[0].SerializeToString()),
        _len_field(12, model.graph.output[0].SerializeToString()),
        _len_field(2, b"g"),
    ] + [_len_field(5, decoy + _fields_shuffled(t, shuffle)) for t, decoy in drawn]
    graph_parts = shuffle(graph_parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(graph_parts)), max_size=2)))
    pieces = [graph_parts[a:b] for a, b in zip([0, *cuts], [*cuts, len(graph_parts)], strict=True)]
    del model.graph.input[:], model.graph.output[:]
    model.ClearField("graph")
    top = [_len_field(7, b"".join(p)) for p in pieces]
    top += [_fields_shuffled(model, lambda parts: parts)]
    data = b"".join(shuffle(top))
    twice = {t.name for t, decoy in drawn if decoy}
    return data, onnx.ModelProto.FromString(data), twice


def _qualifies(t: TensorProto, names: list[str]) -> bool:
    """The scan's contract, stated independently: a unique name, raw data only, exactly
    the bytes the shape needs, over the threshold, in the file."""
    return (
        names.count(t.name) == 1
        and t.HasField("raw_data")
        and not any(len(getattr(t, f)) for f in TYPED_FIELDS)
        and not t.HasField("segment")
        and t.data_location == TensorProto.DEFAULT
        and t.data_type in ITEMSIZES
        and len(t.raw_data) == int(np.prod(t.dims)) * ITEMSIZES[t.data_type]
        and len(t.raw_data) > THRESHOLD
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_bytes())
def test_the_scan_takes_out_exactly_the_plain_large_weights(case):
    data, model, twice = case
    stripped = strip_weights(ByteSource.of_bytes(data), THRESHOLD, ITEMSIZES)
    names = [t.name for t in model.graph.initializer]
    expected = {
        t.name for t in model.graph.initializer if _qualifies(t, names) and t.name not in twice
    }
    if len(set(names)) != len(names):
        assert stripped is None  # the checker reports duplicates, from the whole parse
        return
    if not expected:
        assert stripped is None
        return
    assert stripped is not None
    assert set(stripped.weights) == expected
    skeleton = onnx.ModelProto.FromString(stripped.skeleton)
    want = onnx.ModelProto()
    want.CopyFrom(model)
    for t in want.graph.initializer:
        if t.name in expected:
            (offset, length) = stripped.weights[t.name]
            assert data[offset : offset + length] == t.raw_data
            t.ClearField("raw_data")
    assert skeleton == want
    # Nothing else was copied: taking out n bytes of data shrinks the file by at least n.
    assert len(stripped.skeleton) <= len(data) - sum(n for _, n in stripped.weights.values())


def test_a_real_model_file_imports_as_its_proto_does(tmp_path):
    model = zoo.build("tiny_bert")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    stripped = strip_weights(ByteSource.of_bytes(path.read_bytes()), THRESHOLD, ITEMSIZES)
    assert stripped is not None
    big = [t.name for t in model.graph.initializer if len(t.raw_data) > THRESHOLD]
    assert sorted(stripped.weights) == sorted(big)
    assert len(stripped.skeleton) < path.stat().st_size - sum(
        len(t.raw_data) for t in model.graph.initializer if t.name in big
    ) + 64 * len(big)
    from_file = neuron_ir.import_model(path)
    from_bytes = neuron_ir.import_model(path.read_bytes())
    from_proto = neuron_ir.import_model(model)
    assert str(from_file) == str(from_proto) == str(from_bytes)
    consts = {
        op.attributes["onnx.name"].data: constant_array(op.value)
        for op in from_file.walk()
        if isinstance(op, ConstantOp)
    }
    for t in model.graph.initializer:
        np.testing.assert_array_equal(consts[t.name], onnx.numpy_helper.to_array(t))


def _weighted_model() -> onnx.ModelProto:
    w = np.arange(600, dtype=np.float32).reshape(20, 30)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 30])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_file_cut_short_after_the_scan_is_one_clear_error(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_weighted_model().SerializeToString())
    before = path.read_bytes()
    source = importer._load(path)
    assert source.weights  # the weight is read later, from the file
    try:
        os.truncate(path, 100)
        with pytest.raises(ModelLoadError, match="cannot read initializer 'w'"):
            importer._import(source)
    finally:
        source.close()
    path.write_bytes(before)
    assert neuron_ir.import_model(path) is not None


def test_a_weight_named_in_bad_utf8_is_left_to_the_string_check(tmp_path):
    data = _weighted_model().SerializeToString().replace(b"\x42\x01w", b"\x42\x01\xff")
    assert b"\x42\x01\xff" in data
    assert strip_weights(ByteSource.of_bytes(data), THRESHOLD, ITEMSIZES) is None
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="not valid UTF-8"):
        neuron_ir.import_model(path)


@pytest.mark.parametrize("cut", [1, 7, 50, 2000, -1])
def test_a_truncated_file_gets_protobufs_error_not_the_scans(tmp_path, cut):
    data = _weighted_model().SerializeToString()[:cut]
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError) as from_file:
        neuron_ir.import_model(path)
    with pytest.raises(ModelLoadError) as from_proto_parse:
        importer._parse_bytes(data, str(path))
    assert str(from_file.value) == str(from_proto_parse.value)


@pytest.mark.parametrize(
    "data",
    [b"\x3b\x00", b"\x3a\x80", b"\x3a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x00\x01"],
    ids=["group", "short-length", "huge-length", "field-0"],
)
def test_bytes_the_scan_cannot_read_are_declined(data):
    assert strip_weights(ByteSource.of_bytes(data), THRESHOLD, ITEMSIZES) is None


def test_the_file_is_closed_after_the_import(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_weighted_model().SerializeToString())
    before = set(os.listdir("/proc/self/fd"))
    neuron_ir.import_model(path)
    path.write_bytes(b"\x0a\x05junk!")
    with pytest.raises(ModelLoadError):
        neuron_ir.import_model(path)
    assert set(os.listdir("/proc/self/fd")) == before


def _outcome(path) -> str:
    try:
        return str(neuron_ir.import_model(path))
    except neuron_ir.NeuronIRError as exc:
        return f"error: {exc}"


def test_broken_files_import_as_the_whole_parse_imports_them(tmp_path, monkeypatch):
    """Differential: on mutated copies of a model with weights, importing through the
    scan and importing the whole parse give the same IR or the same error."""
    good = zoo.build("tiny_bert").SerializeToString()
    rng = np.random.default_rng(11)
    path = tmp_path / "m.onnx"
    scanned = 0
    for case in range(60):
        data = bytearray(good)
        kind = case % 3
        at = int(rng.integers(0, len(data)))
        if kind == 0:  # a flipped byte, most often in the structure (the first KB)
            at = at if case % 2 else at % 1024
            data[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            del data[at:]
        else:
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        scanned += strip_weights(ByteSource.of_bytes(bytes(data)), THRESHOLD, ITEMSIZES) is not None
        through_scan = _outcome(path)
        with monkeypatch.context() as m:
            m.setattr("neuron_ir.onnx_wire.strip_weights", lambda *a: None)
            whole = _outcome(path)
        assert through_scan == whole, f"case {case} ({['flip', 'cut', 'insert'][kind]} at {at})"
    assert scanned >= 20  # the scan did take part
