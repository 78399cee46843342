"""``rebatch{batch=N batch-dim=NAME check=true}``: give ``@main`` a batch axis named
by a symbol, so that ``shape-inference{dims="NAME:N"}`` compiles it for batch N.

Three kinds of model reach it:

* **Symbolic batch** (HF exports: ``batch``, ``batch_size``, ``N``, ... or the symbol
  the user names): nothing to rewrite; the symbol is recorded.
* **Unnamed leading dims** (``-1``/``unk__3``/``input_ids_dynamic_axes_1``-style exports):
  every input's dynamic leading dim, and every output's, is renamed to ``batch``.
* **Static batch 1** (exports traced at batch 1): every input with a static leading
  dim of 1 gets a symbolic leading axis. The batch axis is followed op by op through
  ``@main`` (per-op rules below, on the shapes of one batch-1 run); constants that
  hard-code it are rewritten (a Reshape's batch entry becomes -1, so the batch may also
  be folded into the rows of a Gemm and split back; Slice bounds on the batch axis read
  all of it; an axis-less Squeeze gets explicit axes; an Expand keeps the batch by
  broadcasting; a value shared by all samples concatenated with batched ones is first
  broadcast along the batch axis); types get a dynamic batch dim; outputs whose batch
  axis is found carry the symbol. An op that
  mixes samples (a reduction, concatenation, softmax or contraction over the batch axis,
  a Tile of it, ...) or that the rules do not know stops it, with an error naming the
  node. Then the rewrite is **proved** before it is kept: on random inputs, the
  rebatched program at batch ``max(N, 2)`` must equal the original run on each sample
  and stacked (outputs without the batch axis must equal every sample's). If it does
  not, the first op whose value differs is named. The assumption: a value whose batch
  axis is followed holds sample ``i`` at index ``i`` of that axis; the proof checks it.

Every case records ``neuron.batch = N`` and ``neuron.batch_symbol`` on ``@main``; the
run-time batching (``neuron_ir.runtime.batching``) and the partition report read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    DictionaryAttr,
    FunctionType,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.dialects.func import FuncOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.onnx import ConstantOp, OnnxOp
from neuron_ir.analysis.report import BATCH_ATTR, BATCH_SYMBOL_ATTR
from neuron_ir.errors import InterpreterError, NeuronIRError, PassError
from neuron_ir.ir.attrs import constant_array, onnx_attrs
from neuron_ir.ir.util import constant_op
from neuron_ir.kernels import KERNELS

SYMBOL_ATTR = BATCH_SYMBOL_ATTR

# Symbols exporters and users give the batch axis, in order of preference.
BATCH_SYMBOLS = ("batch", "batch_size", "N", "batchsize", "bs", "B", "n", "nbatch", "Batch")
# Names exporters generate for dims the user did not name (they carry no meaning).
_GENERATED = re.compile(
    r"^(|-1|\?|unk__\d+|s\d+|dim_?\d*|.*_dynamic_axes_\d+|"
    r"DynamicDimension\.\d+)$"
)
_INT64_MAX = np.iinfo(np.int64).max


class RebatchError(PassError):
    """The model cannot be given a batch axis (names the node or input that stops it)."""


# ---------------------------------------------------------------------------
# finding the batch axis


def main_func(module: ModuleOp) -> FuncOp:
    for op in module.ops:
        if isinstance(op, FuncOp) and op.sym_name.data == "main":
            return op
    raise PassError("the module has no func.func @main")


def _entry(attrs: ArrayAttr | None, k: int) -> dict[str, Attribute]:
    if attrs is None or k >= len(attrs.data):
        return {}
    return dict(attrs.data[k].data)


def io_symbols(func: FuncOp, results: bool = False) -> list[tuple[str, list[str], Attribute]]:
    """(name, dim symbols, type) of each argument (or result) of ``func``."""
    types = func.function_type.outputs.data if results else func.function_type.inputs.data
    attrs = func.res_attrs if results else func.arg_attrs
    out = []
    for k, ttype in enumerate(types):
        entry = _entry(attrs, k)
        name = entry.get("onnx.name")
        params = entry.get("onnx.dim_params")
        symbols = [s.data for s in params.data] if isinstance(params, ArrayAttr) else []
        rank = len(ttype.get_shape()) if isinstance(ttype, TensorType) else 0
        symbols = (symbols + [""] * rank)[:rank]
        out.append(
            (
                name.data
                if isinstance(name, StringAttr)
                else f"{'result' if results else 'arg'}{k}",
                symbols,
                ttype,
            )
        )
    return out


@dataclass(frozen=True)
class BatchPlan:
    """How ``@main`` gets its batch axis: ``kind`` is ``symbolic``, ``unnamed`` or
    ``static``; ``symbol`` is the name the batch axis has afterwards."""

    kind: str
    symbol: str


def plan_batch(func: FuncOp, batch_dim: str | None = None) -> BatchPlan:
    """Find the batch axis of ``@main`` (without changing anything), or say why not."""
    inputs = io_symbols(func)
    used = sorted({s for _, syms, _ in inputs for s in syms if s})
    if batch_dim:
        if batch_dim in used:
            return BatchPlan("symbolic", batch_dim)
        if used or not _static_leading_one(inputs):
            raise RebatchError(
                f"batch_dim '{batch_dim}' is not a symbolic dim of any input "
                f"(symbols: {', '.join(used) or 'none'})"
            )
        return BatchPlan("static", batch_dim)
    for symbol in BATCH_SYMBOLS:
        if symbol in used:
            return BatchPlan("symbolic", symbol)
    leading = [
        syms[0]
        for _, syms, t in inputs
        if syms and isinstance(t, TensorType) and t.get_shape()[0] == DYNAMIC_INDEX
    ]
    if leading and all(_GENERATED.match(s) for s in leading):
        return BatchPlan("unnamed", "batch")
    if _static_leading_one(inputs):
        return BatchPlan("static", "batch")
    names = ", ".join(f"{n}[{_dims_text(syms, t)}]" for n, syms, t in inputs)
    raise RebatchError(
        "cannot find the batch axis: no input has a batch symbol "
        f"({', '.join(BATCH_SYMBOLS[:3])}, ...), an unnamed leading dim or a "
        f"static leading dim of 1 (inputs: {names}); name it with "
        "batch_dim="
    )


def _dims_text(symbols: list[str], ttype: Attribute) -> str:
    if not isinstance(ttype, TensorType):
        return "unranked"
    dims = [
        s or ("?" if d == DYNAMIC_INDEX else str(d))
        for s, d in zip(symbols, ttype.get_shape(), strict=True)
    ]
    return ",".join(dims) or "scalar"


def _static_leading_one(inputs: list[tuple[str, list[str], Attribute]]) -> bool:
    return any(
        isinstance(t, TensorType) and t.get_shape() and t.get_shape()[0] == 1 for _, _, t in inputs
    )


def _set_dim_params(func: FuncOp, results: bool, k: int, symbols: list[str]) -> None:
    count = len(func.function_type.outputs.data if results else func.function_type.inputs.data)
    attrs = func.res_attrs if results else func.arg_attrs
    entries = [_entry(attrs, i) for i in range(count)]
    entries[k]["onnx.dim_params"] = ArrayAttr([StringAttr(s) for s in symbols])
    new = ArrayAttr([DictionaryAttr(e) for e in entries])
    if results:
        func.res_attrs = new
    else:
        func.arg_attrs = new


def _record(func: FuncOp, batch: int, symbol: str) -> None:
    func.attributes[BATCH_ATTR] = IntegerAttr(batch, i64)
    func.attributes[SYMBOL_ATTR] = StringAttr(symbol)


def _rename_unnamed(func: FuncOp) -> None:
    """Name every dynamic leading dim with a generated name ``batch``."""
    for results in (False, True):
        for k, (_, symbols, ttype) in enumerate(io_symbols(func, results)):
            if (
                symbols
                and isinstance(ttype, TensorType)
                and ttype.get_shape()[0] == DYNAMIC_INDEX
                and _GENERATED.match(symbols[0])
            ):
                _set_dim_params(func, results, k, ["batch", *symbols[1:]])


# ---------------------------------------------------------------------------
# the pass


@dataclass(frozen=True)
class RebatchPass(ModulePass):
    """Give ``@main`` a symbolic batch axis (rebatching a static batch-1 model)."""

    name = "rebatch"

    batch: int = 1
    """The batch size the model will be compiled for (recorded on ``@main``)."""
    batch_dim: str = ""
    """The batch symbol; found from the model's symbols when empty."""
    check: bool = True
    """Prove a static model's rewrite on random inputs before keeping it (false: keep it
    unproved, for inspecting a rewrite the proof refuses)."""
    seed: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.batch < 1:
            raise RebatchError(f"rebatch: batch must be a positive integer, not {self.batch}")
        func = main_func(op)
        plan = plan_batch(func, self.batch_dim or None)
        if plan.kind == "unnamed":
            _rename_unnamed(func)
        elif plan.kind == "static":
            original = op.clone() if self.check else None
            _Rebatcher(func, plan.symbol).run()
            if original is not None:
                prove(original, op, max(self.batch, 2), plan.symbol, self.seed)
        _record(func, self.batch, plan.symbol)


# ---------------------------------------------------------------------------
# tracing: every value of @main's body on one set of inputs


def trace(module: ModuleOp, inputs: list[np.ndarray]) -> dict[SSAValue, np.ndarray]:
    """Every value of ``@main``'s top-level ops (and its arguments) on ``inputs``."""
    values, error = trace_partial(module, inputs)
    if error is not None:
        raise error
    return values


def trace_partial(
    module: ModuleOp, inputs: list[np.ndarray]
) -> tuple[dict[SSAValue, np.ndarray], InterpreterError | None]:
    """Like :func:`trace`, but a failing op ends the run: the values computed before
    it, and the error.

    Passes do not run the interpreter (layering), so this evaluates @main's top-level
    onnx ops itself, with the numpy kernels and, for the cases they leave out,
    onnx.reference's implementation of that one node. Ops with regions (If, Loop) are
    not evaluated: a static model reaches rebatch before lower-control-flow, and one
    with a top-level If or Loop is refused, naming it."""
    func = main_func(module)
    values: dict[SSAValue, np.ndarray] = dict(zip(func.body.block.args, inputs, strict=True))
    for op in func.body.block.ops:
        if op is func.body.block.last_op:
            break
        try:
            if isinstance(op, ConstantOp):
                values[op.results[0]] = constant_array(op.value)
                continue
            if not isinstance(op, OnnxOp) or op.regions:
                raise InterpreterError(f"rebatch cannot evaluate {_label(op)}")
            args = [None if v is None else values[v] for v in op.onnx_inputs()]
            outputs = op.onnx_outputs()
            attrs = onnx_attrs(op)
            results = _evaluate(op, args, attrs, len(outputs))
            for value, result in zip(outputs, results, strict=False):
                if value is not None:
                    values[value] = np.asarray(result)
        except InterpreterError as exc:
            return values, exc
        except Exception as exc:  # a kernel's own complaint: the op does not run
            return values, InterpreterError(f"{_label(op)} failed: {type(exc).__name__}: {exc}")
    return values, None


def _evaluate(op: OnnxOp, args: list, attrs: dict, n_out: int) -> list:
    kernel = KERNELS.get(op.ONNX_TYPE)
    if kernel is not None:
        try:
            return kernel(args, attrs, n_out)
        except NotImplementedError:
            pass
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from dialects.onnx import CANONICAL_OPSET

    names = [f"i{k}" if a is not None else "" for k, a in enumerate(args)]
    node_attrs = {
        k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v for k, v in attrs.items()
    }
    node = helper.make_node(op.ONNX_TYPE, names, [f"o{k}" for k in range(n_out)], **node_attrs)
    graph = helper.make_graph(
        [node],
        "one",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), None)
            for n, a in zip(names, args, strict=True)
            if a is not None
        ],
        [helper.make_tensor_value_info(f"o{k}", 0, None) for k in range(n_out)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", CANONICAL_OPSET)])
    feeds = {n: a for n, a in zip(names, args, strict=True) if a is not None}
    return ReferenceEvaluator(model).run(None, feeds)


def random_input(ttype: Attribute, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random data of ``ttype``'s element type: normal floats, 0/1 integers and booleans
    (0/1 are valid token ids, masks and segment ids alike)."""
    from neuron_ir.ir.util import dtype_of

    dtype = dtype_of(ttype.element_type) if isinstance(ttype, TensorType) else np.float32
    dtype = np.dtype(dtype or np.float32)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 2, shape).astype(dtype)


# ---------------------------------------------------------------------------
# following the batch axis


_UNARY = {
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "IsInf",
    "IsNaN",
    "LeakyRelu",
    "Log",
    "Mish",
    "Neg",
    "Not",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
}
_BROADCAST = {
    "Add",
    "And",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "Pow",
    "PRelu",
    "Sub",
    "Sum",
    "Where",
    "Xor",
}
# Ops whose first input is [N, C, ...] and whose other inputs are parameters.
_IMAGE = {
    "AveragePool",
    "BatchNormalization",
    "Conv",
    "ConvTranspose",
    "DepthToSpace",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "InstanceNormalization",
    "LpPool",
    "LRN",
    "MaxPool",
    "SpaceToDepth",
    "GroupNormalization",
}
# Ops normalising or ranking along one axis (``axis`` attribute, default).
_ALONG_AXIS = {"Softmax": -1, "LogSoftmax": -1, "Hardmax": -1, "LpNormalization": -1}
_REDUCE = {
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
}


class _Rebatcher:
    """Follows the batch axis through ``@main`` on the shapes of one batch-1 run and
    rewrites what hard-codes it."""

    def __init__(self, func: FuncOp, symbol: str):
        self.func = func
        self.symbol = symbol
        self.axis: dict[SSAValue, int | None] = {}
        self.shape: dict[SSAValue, tuple[int, ...]] = {}
        self.consts: dict[SSAValue, np.ndarray] = {}

    # -- driver

    def run(self) -> None:
        func = self.func
        block = func.body.block
        inputs = io_symbols(func)
        batched_args = []
        for arg, (name, symbols, ttype) in zip(block.args, inputs, strict=True):
            if not isinstance(ttype, TensorType) or any(
                d == DYNAMIC_INDEX for d in ttype.get_shape()
            ):
                raise RebatchError(
                    f"rebatch: input '{name}' has a dynamic shape; rebatching "
                    "a model without a batch symbol traces it at batch 1, "
                    "so every input must be static"
                )
            self.shape[arg] = tuple(ttype.get_shape())
            lead = bool(ttype.get_shape()) and ttype.get_shape()[0] == 1
            self.axis[arg] = 0 if lead else None
            if lead:
                batched_args.append((arg.index, name, symbols))
        self._shapes_from_trace()
        for op in list(block.ops):
            if op is block.last_op:
                break
            self.op(op)
        ret = block.last_op
        assert ret is not None
        out_axes = [self.axis.get(v) for v in ret.operands]
        # Retype last: batch dims dynamic, so that shape-inference re-derives them.
        for value, axis in list(self.axis.items()):
            if axis is not None and isinstance(value.type, TensorType) and value in self.shape:
                shape = list(self.shape[value])
                shape[axis] = DYNAMIC_INDEX
                Rewriter.replace_value_with_new_type(
                    value, TensorType(value.type.element_type, shape)
                )
        for index, _name, symbols in batched_args:
            _set_dim_params(func, False, index, [self.symbol, *symbols[1:]])
        outputs = io_symbols(func, results=True)
        for k, (value, axis) in enumerate(zip(ret.operands, out_axes, strict=True)):
            if axis is not None:
                symbols = list(outputs[k][1]) or [""] * len(value.type.get_shape())
                symbols[axis] = self.symbol
                _set_dim_params(func, True, k, symbols)
        func.function_type = FunctionType.from_lists(
            [a.type for a in block.args], [v.type for v in ret.operands]
        )

    def _shapes_from_trace(self) -> None:
        module = self.func.parent_op()
        assert isinstance(module, ModuleOp)
        rng = np.random.default_rng(0)
        args = [random_input(a.type, self.shape[a], rng) for a in self.func.body.block.args]
        try:
            values = trace(module, args)
        except NeuronIRError as exc:
            raise RebatchError(f"rebatch: cannot trace the batch-1 model: {exc}") from None
        for value, array in values.items():
            self.shape[value] = tuple(array.shape)
            owner = value.owner
            if isinstance(owner, ConstantOp):
                self.consts[value] = array

    # -- helpers

    def fail(self, op: Operation, why: str) -> RebatchError:
        return RebatchError(f"rebatch: {_label(op)} {why}; the model cannot be rebatched")

    def const(self, op: Operation, value: SSAValue | None, what: str) -> np.ndarray:
        if value is None or value not in self.consts:
            raise self.fail(op, f"takes its {what} from a computed value, not a constant")
        return self.consts[value]

    def replace_input(self, op: Operation, index: int, array: np.ndarray) -> None:
        """Point ONNX input ``index`` of ``op`` at a new constant ``array``."""
        new = constant_op(np.asarray(array))
        Rewriter.insert_op(new, InsertPoint.before(op))
        value = new.results[0]
        self.consts[value] = np.asarray(array)
        self.shape[value] = tuple(np.asarray(array).shape)
        self.axis[value] = None
        inputs = op.onnx_inputs()  # type: ignore[attr-defined]
        position = sum(1 for v in inputs[:index] if v is not None)
        if inputs[index] is None:
            raise self.fail(op, "lacks an input the rewrite needs")
        operands = list(op.operands)
        old = operands[position]
        operands[position] = value
        op.operands = operands
        if not old.uses and isinstance(old.owner, ConstantOp):
            Rewriter.erase_op(old.owner)

    def rank(self, value: SSAValue | None) -> int:
        return len(self.shape.get(value, ())) if value is not None else 0

    # -- per-op rules

    def op(self, op: Operation) -> None:
        if isinstance(op, ConstantOp):
            self.axis[op.results[0]] = None
            return
        if not isinstance(op, OnnxOp) or op.regions:
            used = [v for v in _reads(op) if self.axis.get(v) is not None]
            if used:
                raise self.fail(op, "reads a batched value and has no batch rule")
            for r in op.results:
                self.axis[r] = None
            return
        inputs = op.onnx_inputs()
        outputs = [v for v in op.onnx_outputs() if v is not None]
        axes = [None if v is None else self.axis.get(v) for v in inputs]
        kind = op.ONNX_TYPE
        if all(a is None for a in axes):
            out: int | None = None
        else:
            rule = getattr(self, f"rule_{kind}", None)
            if rule is not None:
                out = rule(op, inputs, axes)
            elif kind in _UNARY or kind in _BROADCAST:
                out = self.broadcast(op, inputs, axes, outputs[0])
            elif kind in _IMAGE:
                out = self.image(op, axes)
            elif kind in _ALONG_AXIS:
                out = self.along(op, axes[0], _ALONG_AXIS[kind])
            elif kind in _REDUCE:
                out = self.reduce(op, inputs, axes[0])
            else:
                raise self.fail(op, "reads a batched value and has no batch rule")
        for r in outputs:
            self.axis[r] = out
        # BatchNormalization/Dropout extra outputs (mean, mask) follow the first only when
        # they have its rank; others carry no batch axis.
        for r in outputs[1:]:
            if out is not None and self.rank(r) != self.rank(outputs[0]):
                self.axis[r] = None

    def broadcast(self, op: Operation, inputs, axes, result: SSAValue) -> int:
        out_rank = self.rank(result)
        found = {
            out_rank - self.rank(v) + a for v, a in zip(inputs, axes, strict=True) if a is not None
        }
        if len(found) != 1:
            raise self.fail(op, "combines values whose batch axes do not line up")
        return found.pop()

    def image(self, op: Operation, axes) -> int:
        if axes[0] != 0 or any(a is not None for a in axes[1:]):
            raise self.fail(op, "has the batch axis somewhere other than dim 0 of its data")
        return 0

    def along(self, op: Operation, a: int | None, default: int) -> int:
        assert a is not None
        k = int(onnx_attrs(op).get("axis", default)) % self.rank(op.operands[0])
        if k == a:
            raise self.fail(op, f"normalises along the batch axis {a}")
        return a

    def reduce(self, op: Operation, inputs, a: int | None) -> int:
        attrs = onnx_attrs(op)
        rank = self.rank(inputs[0])
        if len(inputs) > 1 and inputs[1] is not None:
            axes = [int(x) % rank for x in self.const(op, inputs[1], "axes").reshape(-1)]
        else:
            axes = list(attrs.get("axes", []))
            axes = [x % rank for x in axes]
        if not axes and not attrs.get("noop_with_empty_axes", 0):
            axes = list(range(rank))
        if a in axes:
            raise self.fail(op, f"reduces over the batch axis {a}")
        assert a is not None
        return a if attrs.get("keepdims", 1) else a - sum(1 for x in axes if x < a)

    def rule_LayerNormalization(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        k = int(onnx_attrs(op).get("axis", -1)) % self.rank(inputs[0])
        if a is None or any(x is not None for x in axes[1:]) or a >= k:
            raise self.fail(op, "normalises over the batch axis")
        return a

    def rule_MatMul(self, op, inputs, axes):  # noqa: N802
        ra, rb = self.rank(inputs[0]), self.rank(inputs[1])
        ro = self.rank(op.results[0])
        found = set()
        a, b = axes
        if a is not None:
            if ra == 1 or a == ra - 1:
                raise self.fail(op, "contracts over the batch axis")
            found.add(ro - 2 if a == ra - 2 else ro - ra + a)
            if a == ra - 2 and b is not None:
                raise self.fail(op, "has the batch axis in the rows of both operands")
        if b is not None:
            if rb == 1 or b == rb - 2:
                raise self.fail(op, "contracts over the batch axis")
            found.add(ro - 1 if b == rb - 1 else ro - rb + b)
        if len(found) != 1:
            raise self.fail(op, "combines operands whose batch axes do not line up")
        return found.pop()

    def rule_Gemm(self, op, inputs, axes):  # noqa: N802
        attrs = onnx_attrs(op)
        a, b = axes[0], axes[1]
        c = axes[2] if len(axes) > 2 else None
        if b is None and c is None and a == (1 if attrs.get("transA", 0) else 0):
            return 0
        if a is None and c is None and b == (0 if attrs.get("transB", 0) else 1):
            return 1
        raise self.fail(op, "contracts over the batch axis")

    def rule_Transpose(self, op, inputs, axes):  # noqa: N802
        rank = self.rank(inputs[0])
        perm = onnx_attrs(op).get("perm", list(range(rank))[::-1])
        return list(perm).index(axes[0])

    def rule_Unsqueeze(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        out_rank = self.rank(op.results[0])
        inserted = {int(x) % out_rank for x in self.const(op, inputs[1], "axes").reshape(-1)}
        kept = [k for k in range(out_rank) if k not in inserted]
        return kept[a]

    def rule_Squeeze(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        shape = self.shape[inputs[0]]
        if len(inputs) > 1 and inputs[1] is not None:
            squeezed = [int(x) % len(shape) for x in self.const(op, inputs[1], "axes").reshape(-1)]
            if a in squeezed:
                raise self.fail(op, f"squeezes away the batch axis {a}")
        else:
            # At batch 1 an axis-less Squeeze drops the batch axis too: name the others.
            squeezed = [k for k, d in enumerate(shape) if d == 1 and k != a]
            self._add_squeeze_axes(op, squeezed)
            self.shape[op.results[0]] = tuple(d for k, d in enumerate(shape) if k not in squeezed)
        return a - sum(1 for k in squeezed if k < a)

    def _add_squeeze_axes(self, op: Operation, squeezed: list[int]) -> None:
        new = constant_op(np.array(squeezed, dtype=np.int64))
        Rewriter.insert_op(new, InsertPoint.before(op))
        self.consts[new.results[0]] = np.array(squeezed, dtype=np.int64)
        self.axis[new.results[0]] = None
        op.operands = [op.operands[0], new.results[0]]

    def rule_Flatten(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        shape = self.shape[inputs[0]]
        k = int(onnx_attrs(op).get("axis", 1)) % (len(shape) + 1)
        if a < k and int(np.prod(shape[:a])) == 1:
            return 0
        if a >= k and int(np.prod(shape[k:a])) == 1:
            return 1
        raise self.fail(op, "folds the batch axis together with other dims")

    def rule_Reshape(self, op, inputs, axes):  # noqa: N802
        # Batched values are the samples' values concatenated along their batch axis,
        # so a Reshape may merge the batch axis into a leading dim (rows of a Gemm) or
        # split it back, as long as it stays the most significant part of its dim.
        a = axes[0]
        if axes[1] is not None:
            raise self.fail(op, "takes its shape from a batched value")
        in_shape, out_shape = self.shape[inputs[0]], self.shape[op.results[0]]
        target = self.const(op, inputs[1], "shape").astype(np.int64).reshape(-1)
        before = int(np.prod(in_shape[:a]))
        candidates = [b for b in range(len(out_shape)) if int(np.prod(out_shape[:b])) == before]
        if not candidates:
            raise self.fail(op, "moves the batch axis inside another dim")
        b = a if a in candidates else candidates[0]
        allowzero = int(onnx_attrs(op).get("allowzero", 0))
        if target[b] == -1 or (
            target[b] == 0 and not allowzero and b == a and out_shape[b] == in_shape[a]
        ):
            return b
        new = np.array(
            [
                out_shape[k] if (t == -1 or (t == 0 and not allowzero)) else t
                for k, t in enumerate(target)
            ],
            dtype=np.int64,
        )
        new[b] = -1
        self.replace_input(op, 1, new)
        return b

    def rule_Expand(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        if axes[1] is not None:
            raise self.fail(op, "takes its shape from a batched value")
        out_rank = self.rank(op.results[0])
        out = out_rank - self.rank(inputs[0]) + a
        target = self.const(op, inputs[1], "shape").astype(np.int64).reshape(-1)
        k = out - (out_rank - len(target))
        if 0 <= k < len(target) and target[k] != 1:
            if target[k] != self.shape[inputs[0]][a]:
                raise self.fail(op, "expands the batch axis")
            new = target.copy()
            new[k] = 1  # broadcasting keeps the input's batch dim
            self.replace_input(op, 1, new)
        return out

    def rule_Tile(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        repeats = self.const(op, inputs[1], "repeats").reshape(-1)
        if axes[1] is not None or repeats[a] != 1:
            raise self.fail(op, "tiles the batch axis")
        return a

    def rule_Pad(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        if any(x is not None for x in axes[1:]):
            raise self.fail(op, "takes its pads from a batched value")
        rank = self.rank(inputs[0])
        pads = self.const(op, inputs[1], "pads").reshape(-1)
        padded_axes = list(range(rank))
        if len(inputs) > 3 and inputs[3] is not None:
            padded_axes = [int(x) % rank for x in self.const(op, inputs[3], "axes").reshape(-1)]
        n = len(padded_axes)
        for j, ax in enumerate(padded_axes):
            if ax == a and (pads[j] != 0 or pads[j + n] != 0):
                raise self.fail(op, "pads the batch axis")
        return a

    def rule_Slice(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        if any(x is not None for x in axes[1:]):
            raise self.fail(op, "takes its bounds from a batched value")
        rank = self.rank(inputs[0])
        starts = self.const(op, inputs[1], "starts").astype(np.int64).reshape(-1)
        ends = self.const(op, inputs[2], "ends").astype(np.int64).reshape(-1)
        sliced = list(range(len(starts)))
        if len(inputs) > 3 and inputs[3] is not None:
            sliced = [int(x) % rank for x in self.const(op, inputs[3], "axes").reshape(-1)]
        steps = np.ones(len(starts), np.int64)
        if len(inputs) > 4 and inputs[4] is not None:
            steps = self.const(op, inputs[4], "steps").astype(np.int64).reshape(-1)
        if a not in sliced:
            return a
        j = sliced.index(a)
        if steps[j] != 1 or self.shape[op.results[0]][a] != self.shape[inputs[0]][a]:
            raise self.fail(op, "slices the batch axis")
        # Bounds that read the whole batch axis at batch 1 must read all of it at N.
        new_starts, new_ends = starts.copy(), ends.copy()
        new_starts[j], new_ends[j] = 0, _INT64_MAX
        if (new_starts != starts).any():
            self.replace_input(op, 1, new_starts)
        if (new_ends != ends).any():
            self.replace_input(op, 2, new_ends)
        return a

    def rule_Concat(self, op, inputs, axes):  # noqa: N802
        rank = self.rank(op.results[0])
        k = int(onnx_attrs(op).get("axis", 0)) % rank
        found = {a for a in axes if a is not None}
        if len(found) != 1 or k in found:
            raise self.fail(op, "concatenates along the batch axis")
        a = found.pop()
        peer = next(v for v, x in zip(inputs, axes, strict=True) if x is not None)
        for j, (value, x) in enumerate(zip(inputs, axes, strict=True)):
            if x is None:
                # A value shared by all samples (a class token, a prefix) joins each
                # sample: broadcast it along the batch axis first.
                self._expand_to_batch(op, j, value, peer, a)
        return a

    def _expand_to_batch(
        self, op: Operation, index: int, value: SSAValue, peer: SSAValue, a: int
    ) -> None:
        shape = self.shape[value]
        if len(shape) != self.rank(peer) or shape[a] != 1:
            raise self.fail(
                op,
                "concatenates batched values with an unbatched one that "
                "cannot be broadcast along the batch axis",
            )
        from dialects.onnx import ExpandOp, ShapeOp, WhereOp

        rank = len(shape)
        vector = TensorType(i64, [rank])
        shape_of = ShapeOp.build(operands=[peer], result_types=[vector])
        mask = constant_op(np.arange(rank) == a)
        fixed = constant_op(np.array(shape, np.int64))
        target = WhereOp.build(
            operands=[mask.results[0], shape_of.results[0], fixed.results[0]], result_types=[vector]
        )
        expand = ExpandOp.build(operands=[value, target.results[0]], result_types=[value.type])
        node = op.attributes.get("onnx.name")
        prefix = f"{node.data}/" if isinstance(node, StringAttr) else ""
        for suffix, new in (
            ("batch_shape", shape_of),
            ("batch_mask", mask),
            ("shape", fixed),
            ("batch_target", target),
            ("batch_expand", expand),
        ):
            new.attributes["onnx.name"] = StringAttr(f"{prefix}rebatch_{index}_{suffix}")
        Rewriter.insert_op([shape_of, mask, fixed, target, expand], InsertPoint.before(op))
        for helper_op in (shape_of, mask, fixed, target):
            self.axis[helper_op.results[0]] = None
        self.axis[expand.results[0]] = a
        self.shape[expand.results[0]] = shape
        operands = list(op.operands)
        operands[index] = expand.results[0]
        op.operands = operands

    def rule_Split(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        k = int(onnx_attrs(op).get("axis", 0)) % self.rank(inputs[0])
        if k == a or any(x is not None for x in axes[1:]):
            raise self.fail(op, "splits the batch axis")
        return a

    def rule_Gather(self, op, inputs, axes):  # noqa: N802
        rank = self.rank(inputs[0])
        k = int(onnx_attrs(op).get("axis", 0)) % rank
        a, ai = axes
        if a is not None and ai is None:
            if a == k:
                raise self.fail(op, "gathers along the batch axis")
            return a if a < k else a - 1 + self.rank(inputs[1])
        if a is None and ai is not None:
            return k + ai
        raise self.fail(op, "gathers batched indices from batched data")

    def rule_GatherElements(self, op, inputs, axes):  # noqa: N802
        k = int(onnx_attrs(op).get("axis", 0)) % self.rank(inputs[0])
        if axes[0] != axes[1] or axes[0] == k:
            raise self.fail(op, "gathers along the batch axis")
        return axes[0]

    def rule_ArgMax(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        attrs = onnx_attrs(op)
        k = int(attrs.get("axis", 0)) % self.rank(inputs[0])
        if k == a:
            raise self.fail(op, "ranks along the batch axis")
        return a if attrs.get("keepdims", 1) or a < k else a - 1

    rule_ArgMin = rule_ArgMax  # noqa: N815

    def rule_TopK(self, op, inputs, axes):  # noqa: N802
        if axes[1] is not None:
            raise self.fail(op, "takes k from a batched value")
        return self.along(op, axes[0], -1)

    def rule_CumSum(self, op, inputs, axes):  # noqa: N802
        a = axes[0]
        k = int(self.const(op, inputs[1], "axis").reshape(-1)[0]) % self.rank(inputs[0])
        if k == a:
            raise self.fail(op, "accumulates along the batch axis")
        return a

    def rule_Shape(self, op, inputs, axes):  # noqa: N802
        # The shape vector itself holds no batch axis; a use of its batch entry as a
        # shape (the dynamic pattern) is caught where it is used.
        del op, inputs, axes
        return None

    def rule_Size(self, op, inputs, axes):  # noqa: N802
        del inputs, axes
        raise self.fail(op, "reads the batch size")


def _reads(op: Operation) -> list[SSAValue]:
    values = list(op.operands)
    for inner in op.walk():
        if inner is not op:
            values.extend(inner.operands)
    return values


def _label(op: Operation) -> str:
    name = op.attributes.get("onnx.name")
    op_type = op.name.removeprefix("onnx.")
    if isinstance(name, StringAttr):
        return f"node '{name.data}' ({op_type})"
    return f"an {op_type} op"


# ---------------------------------------------------------------------------
# the proof


def batch_axes(func: FuncOp, symbol: str, results: bool = False) -> list[int | None]:
    """The axis carrying ``symbol`` on each argument (or result) of ``func``."""
    return [
        symbols.index(symbol) if symbol in symbols else None
        for _, symbols, _ in io_symbols(func, results)
    ]


def prove(original: ModuleOp, rebatched: ModuleOp, n: int, symbol: str, seed: int = 0) -> None:
    """Check that ``rebatched`` at batch ``n`` equals ``original`` run on each of the
    ``n`` samples and stacked; name the first op that differs if it does not."""
    func = main_func(rebatched)
    in_axes = batch_axes(func, symbol)
    out_axes = batch_axes(func, symbol, results=True)
    orig_func = main_func(original)
    rng = np.random.default_rng(seed)
    samples: list[list[np.ndarray]] = []
    shared: dict[int, np.ndarray] = {}
    for _ in range(n):
        row = []
        for k, arg in enumerate(orig_func.body.block.args):
            shape = tuple(arg.type.get_shape())  # type: ignore[attr-defined]
            if in_axes[k] is None:
                if k not in shared:
                    shared[k] = random_input(arg.type, shape, rng)
                row.append(shared[k])
            else:
                row.append(random_input(arg.type, shape, rng))
        samples.append(row)
    batched = [
        np.concatenate([s[k] for s in samples], axis=ax) if ax is not None else samples[0][k]
        for k, ax in enumerate(in_axes)
    ]
    try:
        per_sample = [_results(original, s) for s in samples]
    except NeuronIRError as exc:
        raise RebatchError(f"rebatch: the batch-1 model does not run: {exc}") from None
    try:
        got = _results(rebatched, batched)
        bad = None
        for k, ax in enumerate(out_axes):
            want = (
                np.concatenate([np.asarray(p[k]) for p in per_sample], axis=ax)
                if ax is not None
                else np.asarray(per_sample[0][k])
            )
            if not _close(np.asarray(got[k]), want) or (
                ax is None and not all(_close(np.asarray(p[k]), want) for p in per_sample)
            ):
                bad = k
                break
    except InterpreterError:
        bad = -1
    if bad is None:
        return
    where = _first_difference(original, rebatched, samples, batched)
    outputs = io_symbols(func, results=True)
    what = f"output '{outputs[bad][0]}' differs" if bad >= 0 else "the batched program fails to run"
    raise RebatchError(
        f"rebatch: the batch-{n} program is not {n} batch-1 runs stacked "
        f"({what}; first difference at {where}); the model cannot be rebatched"
    )


def _results(module: ModuleOp, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """@main's results on ``inputs``."""
    values = trace(module, inputs)
    ret = main_func(module).body.block.last_op
    assert ret is not None
    return [values[v] for v in ret.operands]


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if got.dtype.kind in "fc":
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5 * scale, equal_nan=True))
    return bool(np.array_equal(got, want))


def _first_difference(original: ModuleOp, rebatched: ModuleOp, samples, batched) -> str:
    """The first op of the rebatched ``@main`` whose batched value is not the samples'
    values stacked (or that fails to run)."""
    orig_ops = [o for o in main_func(original).body.block.ops if not isinstance(o, ConstantOp)]
    new_ops = [o for o in main_func(rebatched).body.block.ops if not isinstance(o, ConstantOp)]
    per_sample = [trace(original, s) for s in samples]
    got, error = trace_partial(rebatched, batched)
    failed = None if error is None else error.message
    for old, new in zip(orig_ops, new_ops, strict=False):
        for r_old, r_new in zip(old.results, new.results, strict=False):
            if r_new not in got:
                cause = (failed or "").removeprefix(f"{_label(new)} failed: ")
                return _label(new) + (f", which fails: {cause}" if cause else "")
            want = [np.asarray(p[r_old]) for p in per_sample if r_old in p]
            value = got[r_new]
            if not isinstance(r_new.type, TensorType) or len(want) != len(samples):
                continue
            shape = r_new.type.get_shape()
            if DYNAMIC_INDEX not in shape:
                continue  # unbatched (a Shape of a batched value differs legitimately)
            expect = np.concatenate(want, axis=shape.index(DYNAMIC_INDEX))
            if not _close(np.asarray(value), expect):
                return _label(new)
    return "an output"


__all__ = [
    "BATCH_ATTR",
    "BATCH_SYMBOLS",
    "SYMBOL_ATTR",
    "BatchPlan",
    "RebatchError",
    "RebatchPass",
    "batch_axes",
    "io_symbols",
    "main_func",
    "plan_batch",
    "prove",
    "trace",
]
