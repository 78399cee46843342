"""A small ONNX graph builder shared by the zoo's model generators.

It mimics the naming habits of ``torch.onnx.export``: nodes are named after the
module scope they come from ("/encoder/layer.0/attention/self/MatMul", with
"_1", "_2", ... appended on repeats), node outputs are "<node name>_output_<i>",
small constants are ``Constant`` nodes and weights are initializers named by their
parameter path.  One name registry is shared by a graph and all of its subgraphs,
so every node and value name is unique across the whole model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRODUCER_NAME = "neuron-ir-zoo"
PRODUCER_VERSION = "1"

Dim = int | str | None


class _NameRegistry:
    """Hands out names that have not been used anywhere in the model yet."""

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._repeats: dict[str, int] = {}

    def claim(self, name: str) -> str:
        """Reserve ``name`` exactly; it is a bug to ask for a taken name."""
        if name in self._used:
            raise ValueError(f"name {name!r} is already used in this model")
        self._used.add(name)
        return name

    def fresh(self, base: str) -> str:
        """``base`` if free, else ``base_1``, ``base_2``, ... (exporter style)."""
        n = self._repeats.get(base, 0)
        name = base if n == 0 else f"{base}_{n}"
        while name in self._used:
            n += 1
            name = f"{base}_{n}"
        self._repeats[base] = n + 1
        self._used.add(name)
        return name


def _np_dtype_to_onnx(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class GraphBuilder:
    """Accumulates the nodes, initializers and graph inputs/outputs of one graph.

    ``opset`` selects the operator signatures of the helpers that changed over
    time (Unsqueeze/Squeeze/ReduceSum axes moved from attribute to input at 13).
    """

    def __init__(
        self,
        opset: int,
        seed: int = 0,
        *,
        _registry: _NameRegistry | None = None,
        _rng: np.random.Generator | None = None,
        _scope: Sequence[str] = (),
    ) -> None:
        self.opset = opset
        self.rng = _rng if _rng is not None else np.random.default_rng(seed)
        self._names = _registry if _registry is not None else _NameRegistry()
        self._scope: list[str] = list(_scope)
        self.nodes: list[onnx.NodeProto] = []
        # Weights are written straight into the final proto: protobuf has no
        # moves, and copying ~440 MB of BERT-base through make_graph/make_model
        # would cost seconds and a second copy in memory.
        self._model = onnx.ModelProto()
        self._graph = self._model.graph
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    # ----------------------------------------------------------------- scopes
    @contextlib.contextmanager
    def scope(self, *parts: str) -> Iterator[None]:
        """Prefix node names created inside with ``/part/...`` (module path)."""
        self._scope.extend(parts)
        try:
            yield
        finally:
            del self._scope[len(self._scope) - len(parts) :]

    def subgraph(self) -> GraphBuilder:
        """A builder for a Loop/If body; shares names and the weight generator."""
        return GraphBuilder(self.opset, _registry=self._names, _rng=self.rng, _scope=self._scope)

    # ------------------------------------------------------------------ nodes
    def op(
        self, op_type: str, *inputs: str | None, outputs: int = 1, name: str | None = None, **attrs
    ):
        """Append a node; returns its output name (or a list if ``outputs > 1``).

        ``None`` inputs become "" (an omitted optional input).
        """
        node_name = self._names.fresh("/" + "/".join([*self._scope, name or op_type]))
        out_names = [self._names.claim(f"{node_name}_output_{i}") for i in range(outputs)]
        in_names = ["" if i is None else i for i in inputs]
        self.nodes.append(helper.make_node(op_type, in_names, out_names, name=node_name, **attrs))
        return out_names[0] if outputs == 1 else out_names

    def const(self, value, dtype=np.float32) -> str:
        """A ``Constant`` node holding ``value`` (scalars stay rank 0)."""
        array = np.asarray(value, dtype=dtype)
        return self.op("Constant", name="Constant", value=numpy_helper.from_array(array))

    def ints(self, *values: int) -> str:
        """A 1-D int64 ``Constant``, the usual shape/axes/index operand."""
        return self.const(list(values), np.int64)

    # ----------------------------------------------------------- initializers
    def param(self, name: str, array: np.ndarray) -> str:
        """Register ``array`` as an initializer called ``name`` (stored as raw_data)."""
        array = np.asarray(array)
        tensor = self._graph.initializer.add()
        tensor.name = self._names.claim(name)
        tensor.data_type = _np_dtype_to_onnx(array.dtype)
        tensor.dims.extend(array.shape)
        # tobytes() is C-order whatever the layout, and ONNX raw_data is little-endian.
        tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return name

    def normal(self, shape: Sequence[int], std: float) -> np.ndarray:
        """float32 N(0, std^2) drawn straight in float32 (no float64 temporaries)."""
        out = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        out *= np.float32(std)
        return out

    def uniform(self, shape: Sequence[int], low: float, high: float) -> np.ndarray:
        out = self.rng.random(tuple(shape), dtype=np.float32)
        out *= np.float32(high - low)
        out += np.float32(low)
        return out

    # -------------------------------------------------------- graph interface
    def input(self, name: str, elem_type: int, shape: Sequence[Dim] | None) -> str:
        self.inputs.append(helper.make_tensor_value_info(self._names.claim(name), elem_type, shape))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: Sequence[Dim] | None) -> str:
        """Declare ``value`` a graph output called ``name``, renaming it in place.

        Renaming (rather than adding an Identity) matches exporters, which give the
        producing node's output the user-facing name directly.
        """
        if name != value:
            self._names.claim(name)
            self._rename(value, name)
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def _rename(self, old: str, new: str) -> None:
        def visit(nodes) -> None:
            for node in nodes:
                for seq in (node.input, node.output):
                    for i, v in enumerate(seq):
                        if v == old:
                            seq[i] = new
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        visit(attr.g.node)
                        for o in attr.g.output:
                            if o.name == old:
                                o.name = new

        visit(self.nodes)

    def graph(self, name: str) -> onnx.GraphProto:
        """Fill in and return this builder's graph (call once, when complete)."""
        g = self._graph
        g.name = name
        g.node.extend(self.nodes)
        g.input.extend(self.inputs)
        g.output.extend(self.outputs)
        return g

    def model(self, name: str, doc: str = "") -> onnx.ModelProto:
        """The finished model around this (top-level) builder's graph."""
        model = self._model
        self.graph(name)
        opset = model.opset_import.add()
        opset.domain = ""
        opset.version = self.opset
        # The IR version an exporter would pick for this opset, not the newest
        # one this onnx package knows, so older runtimes load it too.
        model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
        model.producer_name = PRODUCER_NAME
        model.producer_version = PRODUCER_VERSION
        model.doc_string = doc
        return model

    # ------------------------------------------- opset-dependent op signatures
    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.ints(*axes))
        return self.op("Unsqueeze", x, axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Squeeze", x, self.ints(*axes))
        return self.op("Squeeze", x, axes=list(axes))

    def reduce_sum(self, x: str, axes: Sequence[int] | None, keepdims: int = 1) -> str:
        if self.opset >= 13:
            axes_in = self.ints(*axes) if axes is not None else None
            return self.op("ReduceSum", x, axes_in, keepdims=keepdims)
        return self.op("ReduceSum", x, axes=None if axes is None else list(axes), keepdims=keepdims)

    def reduce(self, op_type: str, x: str, axes: Sequence[int] | None, keepdims: int = 1) -> str:
        """ReduceMean/Max/...: axes stay an attribute until opset 18."""
        if self.opset >= 18:
            axes_in = self.ints(*axes) if axes is not None else None
            return self.op(op_type, x, axes_in, keepdims=keepdims)
        return self.op(op_type, x, axes=None if axes is None else list(axes), keepdims=keepdims)

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int]) -> str:
        return self.op("Slice", x, self.ints(*starts), self.ints(*ends), self.ints(*axes))

    def dim(self, shape: str, index: int) -> str:
        """Scalar size of one axis from a ``Shape`` output (Constant + Gather)."""
        return self.op("Gather", shape, self.const(index, np.int64), axis=0)

    def dynamic_shape(self, *parts: str | int) -> str:
        """Concat of 1-D pieces: ints become Constants, str are scalars to Unsqueeze.

        This is how exporters spell ``x.view(batch, -1, 16)`` when ``batch``
        comes from ``x.size(0)``: Shape -> Gather -> Unsqueeze -> Concat.
        """
        pieces = [self.ints(p) if isinstance(p, int) else self.unsqueeze(p, [0]) for p in parts]
        return self.op("Concat", *pieces, axis=0)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL
