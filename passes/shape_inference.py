"""``shape-inference``: make every tensor shape in ``@main`` static, or say why not.

Graph inputs are pinned first (``input-shapes`` gives whole shapes, ``dims`` binds
ONNX symbolic dims by name); an input dim left dynamic is an error naming the input,
the dim, its symbol and the option that would pin it. Then every op gets result
types from the per-op rules in ``neuron_ir.analysis.shapes``, and ops whose inputs are all
compile-time constants are folded with the interpreter's kernels, so that the shape
arithmetic exporters emit (Shape -> Gather -> Concat -> Reshape, ConstantOfShape,
Range, Expand) disappears. Results whose size depends on data (NonZero,
NonMaxSuppression, a Loop that can stop early, ...) may stay dynamic; their ops are
marked ``onnx.data_dependent``, as are results whose operands all have static shapes
(so only operand *values* can decide their size: axes, pads or bounds read from a
runtime tensor). Any other dynamic result is an error naming the node: a dim that
pinning the inputs would have fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    FunctionType,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.dialects.func import FuncOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.transforms.dead_code_elimination import region_dce

from dialects.onnx import ConstantOp, CustomOp, IfOp, LoopOp, OnnxOp, ScanOp
from neuron_ir.analysis.report import BATCH_ATTR, BATCH_SYMBOL_ATTR
from neuron_ir.analysis.shapes import ShapeContext, ShapeError, TensorInfo, infer
from neuron_ir.errors import NeuronIRError, PassError
from neuron_ir.ir.attrs import constant_array, onnx_attrs
from neuron_ir.ir.util import constant_op, info_of_type, is_static, tensor_type
from neuron_ir.kernels import KERNELS

# Constants up to this many elements carry their value through inference (shape
# tensors, axes, scales); bigger ones (weights) only their type.
VALUE_LIMIT = 4096
# Folding never produces a constant bigger than this (elements), nor allocates more:
# bigger results are left to run time.
FOLD_LIMIT = 65536
# lower-to-nc must fold what shape inference left (a NeuronCore program has no Range):
# its budget is in bytes, big enough for position ids at large batches, and over it the
# lowering fails with a clear error instead of allocating.
LOWERING_FOLD_BYTES = 1 << 28
# Largest dim an option may pin: beyond it numpy's int64 element counts overflow.
MAX_DIM = 2**31 - 1
_NEVER_FOLD = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
    "Dropout",
}


def _parse_shapes(spec: str) -> dict[str, tuple[int, ...]]:
    """``"a:1x128,b:1x128"`` -> {"a": (1, 128), "b": (1, 128)}; ``"s:"`` is a scalar."""
    out: dict[str, tuple[int, ...]] = {}
    seen: set[str] = set()
    for item in _split(spec):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise PassError(f"input-shapes entry '{item}' is not NAME:DIMxDIM...")
        try:
            out[name] = tuple(int(d) for d in dims.split("x")) if dims else ()
        except ValueError:
            raise PassError(
                f"input-shapes entry '{item}': dims must be integers joined by 'x'"
            ) from None
        if name in seen:
            raise PassError(f"input-shapes names '{name}' twice")
        seen.add(name)
        if any(not 0 <= d <= MAX_DIM for d in out[name]):
            # A whole shape may hold an empty dim (ONNX allows empty tensors: an empty
            # axes list, a zero-length batch of boxes); a symbol bound to 0 may not.
            raise PassError(f"input-shapes entry '{item}': dims must be between 0 and {MAX_DIM}")
    return out


def _parse_dims(spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in _split(spec):
        name, sep, value = item.rpartition(":")
        if not sep or not name:
            raise PassError(f"dims entry '{item}' is not SYMBOL:SIZE")
        if name in out:
            raise PassError(f"dims names '{name}' twice")
        try:
            out[name] = int(value)
        except ValueError:
            raise PassError(f"dims entry '{item}': size must be an integer") from None
        if not 0 < out[name] <= MAX_DIM:
            raise PassError(f"dims entry '{item}': size must be between 1 and {MAX_DIM}")
    return out


def _split(spec: str) -> list[str]:
    return [part.strip() for part in spec.replace(";", ",").split(",") if part.strip()]


def _label(op: Operation) -> str:
    name = op.attributes.get("onnx.name")
    op_type = op.name.removeprefix("onnx.")
    if isinstance(name, StringAttr):
        return f"node '{name.data}' ({op_type})"
    # An unnamed node: name it by its first result (an ONNX value name, or the SSA name).
    for result in op.results:
        if result.name_hint:
            return f"the {op_type} node producing '%{result.name_hint}'"
    article = "an" if op_type[:1] in "AEIOU" else "a"
    return f"{article} {op_type} node"


@dataclass(frozen=True)
class ShapeInferencePass(ModulePass):
    """Pin input shapes, infer static types for every op, fold shape arithmetic."""

    name = "shape-inference"

    input_shapes: str = ""
    """Whole input shapes: ``name:2x64,other:2x64``."""
    dims: str = ""
    """ONNX symbolic dims by name: ``batch:2,sequence:64``."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        shapes = _parse_shapes(self.input_shapes)
        dims = _parse_dims(self.dims)
        funcs = [f for f in op.ops if isinstance(f, FuncOp)]
        main = next((f for f in funcs if f.sym_name.data == "main"), None)
        if main is None:
            raise PassError("shape-inference needs a func.func @main")
        _pin_recorded_batch(main, dims)
        _pin_inputs(main, shapes, dims)
        inference = _Inference()
        inference.block(main.body.block)
        _update_signature(main)
        region_dce(main.body)  # folded shape arithmetic is dead now
        _check_static(main)


def _pin_recorded_batch(func: FuncOp, dims: dict[str, int]) -> None:
    """The batch ``rebatch`` recorded on @main pins its symbol, unless dims does."""
    batch = func.attributes.get(BATCH_ATTR)
    symbol = func.attributes.get(BATCH_SYMBOL_ATTR)
    if not isinstance(batch, IntegerAttr) or not isinstance(symbol, StringAttr):
        return
    n = batch.value.data
    if symbol.data in dims and dims[symbol.data] != n:
        raise PassError(
            f"dims pins the batch symbol '{symbol.data}' to {dims[symbol.data]}, "
            f"but the model is compiled for batch {n}"
        )
    dims[symbol.data] = n


def _arg_names(func: FuncOp) -> list[tuple[str, list[str]]]:
    out = []
    for k in range(len(func.body.block.args)):
        name, symbols = f"arg{k}", []
        if func.arg_attrs is not None and k < len(func.arg_attrs.data):
            entry = func.arg_attrs.data[k].data
            if isinstance(entry.get("onnx.name"), StringAttr):
                name = entry["onnx.name"].data
            if isinstance(entry.get("onnx.dim_params"), ArrayAttr):
                symbols = [s.data for s in entry["onnx.dim_params"].data]
        out.append((name, symbols))
    return out


def _pin_inputs(func: FuncOp, shapes: dict[str, tuple[int, ...]], dims: dict[str, int]) -> None:
    names = _arg_names(func)
    known = {n for n, _ in names}
    for name in shapes:
        if name not in known:
            raise PassError(
                f"input-shapes names '{name}', which is not a graph input "
                f"(inputs: {', '.join(sorted(known))})"
            )
    used_symbols = {s for _, symbols in names for s in symbols if s}
    for symbol in dims:
        if symbol not in used_symbols:
            raise PassError(
                f"dims names '{symbol}', which no graph input uses "
                f"(symbols: {', '.join(sorted(used_symbols)) or 'none'})"
            )
    for arg, (name, symbols) in zip(func.body.block.args, names, strict=True):
        ttype = arg.type
        if not isinstance(ttype, TensorType):
            if name in shapes:
                _retype(arg, TensorType(ttype.element_type, list(shapes[name])))  # type: ignore
                continue
            raise PassError(
                f"input '{name}' has unknown rank: pin it with input-shapes=\"{name}:DxD...\""
            )
        current = list(ttype.get_shape())
        symbols = symbols + [""] * (len(current) - len(symbols))
        if name in shapes:
            pinned = list(shapes[name])
            if len(pinned) != len(current):
                raise PassError(
                    f"input-shapes gives '{name}' rank {len(pinned)}, but the "
                    f"input has rank {len(current)}"
                )
            for k, (old, new) in enumerate(zip(current, pinned, strict=True)):
                if old != DYNAMIC_INDEX and old != new:
                    raise PassError(
                        f"input-shapes gives '{name}' dim {k} = {new}, but it is fixed at {old}"
                    )
            current = pinned
        for k, d in enumerate(current):
            if d == DYNAMIC_INDEX and symbols[k] in dims:
                current[k] = dims[symbols[k]]
        for k, d in enumerate(current):
            if d == DYNAMIC_INDEX:
                symbol = symbols[k]
                hint = (
                    f'dims="{symbol}:N" or input-shapes="{name}:..."'
                    if symbol
                    else f'input-shapes="{name}:..."'
                )
                what = f"dim {k} ('{symbol}')" if symbol else f"dim {k}"
                raise PassError(
                    f"input '{name}' {what} is dynamic; the NeuronCore needs "
                    f"static shapes: pin it with {hint}"
                )
        _retype(arg, TensorType(ttype.element_type, current))


def _update_signature(func: FuncOp) -> None:
    block = func.body.block
    ret = block.last_op
    outputs = [v.type for v in ret.operands] if ret is not None else []
    func.function_type = FunctionType.from_lists([a.type for a in block.args], outputs)


class _Inference:
    def __init__(self) -> None:
        self.info: dict[SSAValue, TensorInfo] = {}
        self.rewriter = Rewriter()

    def get(self, value: SSAValue | None) -> TensorInfo | None:
        if value is None:
            return None
        found = self.info.get(value)
        if found is None:
            found = info_of_type(value.type)
            self.info[value] = found
        return found

    def set(self, value: SSAValue, info: TensorInfo, op: Operation) -> SSAValue:
        merged = _merge(info, info_of_type(value.type), op)
        value = _retype(value, tensor_type(merged.dtype, merged.shape))
        self.info[value] = merged
        return value

    def block(self, block: Block) -> None:
        for op in list(block.ops):
            try:
                self.op(op)
            except ShapeError as exc:
                raise PassError(f"{_label(op)}: {exc}") from None
            except NeuronIRError:
                raise

    def op(self, op: Operation) -> None:
        if isinstance(op, ConstantOp):
            array = constant_array(op.value)
            value = array if array.size <= VALUE_LIMIT else None
            self.info[op.results[0]] = TensorInfo(array.dtype, tuple(array.shape), value)
            return
        if isinstance(op, IfOp):
            self.if_op(op)
            return
        if isinstance(op, LoopOp):
            self.loop_op(op)
            return
        if isinstance(op, ScanOp):
            self.scan_op(op)
            return
        if not isinstance(op, OnnxOp):
            for region in op.regions:
                for block in region.blocks:
                    self.block(block)
            return
        inputs = [self.get(v) for v in op.onnx_inputs()]
        outputs = op.onnx_outputs()
        attrs = onnx_attrs(op)
        ctx = ShapeContext(op.ONNX_TYPE, inputs, attrs, len(outputs))
        results = infer(ctx)
        if self.fold(op, inputs, attrs, outputs, results):
            return
        for value, info in zip(outputs, results, strict=True):
            if value is not None:
                self.set(value, info, op)
        if any(r.data_dependent for r in results):
            op.attributes["onnx.data_dependent"] = UnitAttr()

    def fold(
        self,
        op: OnnxOp,
        inputs: list[TensorInfo | None],
        attrs: dict,
        outputs: list[SSAValue | None],
        results: list[TensorInfo],
    ) -> bool:
        """Replace ``op`` by constants when its results are known at compile time."""
        if op.ONNX_TYPE in _NEVER_FOLD or op.regions:
            return False
        values: list[np.ndarray | None] = []
        if all(r.value is not None for r, v in zip(results, outputs, strict=True) if v is not None):
            values = [r.value for r in results]
        else:
            kernel = KERNELS.get(op.ONNX_TYPE)
            if kernel is None or any(i is not None and i.value is None for i in inputs):
                return False
            # The budget is checked before the kernel runs: a shape rule that cannot
            # bound a result (or bounds it over FOLD_LIMIT) leaves the op to run time,
            # so folding never allocates more than FOLD_LIMIT elements a result.
            if any(
                v is not None and not _within_budget(r)
                for r, v in zip(results, outputs, strict=True)
            ):
                return False
            try:
                values = kernel(
                    [None if i is None else i.value for i in inputs], attrs, len(outputs)
                )
            except NotImplementedError:
                return False
            except Exception as exc:
                raise PassError(f"{_label(op)}: constant folding failed: {exc}") from None
            if any(np.asarray(v).size > FOLD_LIMIT for v in values):
                return False
        base = op.onnx_node_name()
        new_ops: list[Operation] = []
        new_results: list[SSAValue | None] = []
        for k, (value, array) in enumerate(zip(outputs, values, strict=False)):
            if value is None:
                new_results.append(None)
                continue
            const = constant_op(np.asarray(array), f"{base}/folded_{k}" if base else None)
            new_ops.append(const)
            new_results.append(const.results[0])
            self.info[const.results[0]] = TensorInfo.of_array(np.asarray(array))
        # Results of the op in IR order (optional ones may be absent).
        replacement = [r for r, v in zip(new_results, outputs, strict=False) if v is not None]
        self.rewriter.replace_op(op, new_ops, replacement)
        return True

    # -- control flow --

    def region_results(self, block: Block, arg_infos: list[TensorInfo]) -> list[TensorInfo]:
        for arg, info in zip(list(block.args), arg_infos, strict=False):
            arg = _retype(arg, tensor_type(info.dtype, info.shape))
            self.info[arg] = TensorInfo(info.dtype, info.shape, None, info.data_dependent)
        self.block(block)
        terminator = block.last_op
        return [self.get(v) for v in terminator.operands]  # type: ignore[union-attr,misc]

    def if_op(self, op: IfOp) -> None:
        cond = self.get(op.cond)
        then_infos = self.region_results(op.then_branch.block, [])
        else_infos = self.region_results(op.else_branch.block, [])
        taken = None
        if cond is not None and cond.value is not None:
            taken = then_infos if bool(np.asarray(cond.value).reshape(-1)[0]) else else_infos
        for k, value in enumerate(list(op.results)):
            if taken is not None:
                info = taken[k]
            else:
                info = _join(then_infos[k], else_infos[k])
            self.set(value, TensorInfo(info.dtype, info.shape, None, info.data_dependent), op)
            if info.data_dependent:
                op.attributes["onnx.data_dependent"] = UnitAttr()

    def loop_op(self, op: LoopOp) -> None:
        trip = self.get(op.M)
        cond = self.get(op.cond)
        carried = [self.get(v) for v in op.v_initial]
        body = op.body.block
        arg_infos = [TensorInfo(np.dtype(np.int64), ()), TensorInfo(np.dtype(np.bool_), ())]
        state = [TensorInfo(c.dtype, c.shape) for c in carried]  # type: ignore[union-attr]
        for _ in range(3):  # until the carried shapes reach a fixed point
            outs = self.region_results(body, arg_infos + state)
            new_state = [_join(s, o) for s, o in zip(state, outs[1 : 1 + len(state)], strict=True)]
            if new_state == state:
                break
            state = new_state
        n_carried = len(state)
        scan_infos = outs[1 + n_carried :]
        cond_out = outs[0]
        stops_early = cond is not None and not (
            cond_out.value is not None
            and bool(np.asarray(cond_out.value).all())
            or _passes_through(body, 1)
        )
        count: int | None = None
        if trip is not None and trip.value is not None and not stops_early:
            count = int(np.asarray(trip.value).reshape(-1)[0])
        data_dependent = count is None
        results = list(op.results)
        for value, info in zip(results[:n_carried], state, strict=True):
            self.set(value, TensorInfo(info.dtype, info.shape, None, info.data_dependent), op)
        for value, info in zip(results[n_carried:], scan_infos, strict=True):
            shape = None if info.shape is None else (count, *info.shape)
            self.set(value, TensorInfo(info.dtype, shape, None, data_dependent), op)
        if data_dependent and len(op.results) > n_carried:
            op.attributes["onnx.data_dependent"] = UnitAttr()

    def scan_op(self, op: ScanOp) -> None:
        attrs = onnx_attrs(op)
        inputs = [self.get(v) for v in op.initial_state_and_scan_inputs]
        n_scan = attrs["num_scan_inputs"]
        n_state = len(inputs) - n_scan
        in_axes = attrs.get("scan_input_axes", [0] * n_scan)
        length: int | None = None
        slices = []
        for k, info in enumerate(inputs[n_state:]):
            if info is None or info.shape is None:
                slices.append(TensorInfo(None if info is None else info.dtype, None))
                continue
            axis = in_axes[k] % len(info.shape)
            length = info.shape[axis] if length is None else length
            slices.append(TensorInfo(info.dtype, info.shape[:axis] + info.shape[axis + 1 :]))
        state = [TensorInfo(i.dtype, i.shape) for i in inputs[:n_state]]  # type: ignore
        outs = self.region_results(op.body.block, state + slices)
        n_scan_out = len(op.results) - n_state
        out_axes = attrs.get("scan_output_axes", [0] * n_scan_out)
        results = list(op.results)
        for value, info in zip(results[:n_state], outs[:n_state], strict=True):
            self.set(value, TensorInfo(info.dtype, info.shape), op)
        for k, (value, info) in enumerate(zip(results[n_state:], outs[n_state:], strict=True)):
            if info.shape is None:
                self.set(value, TensorInfo(info.dtype, None), op)
                continue
            stacked = [length, *info.shape]
            axis = out_axes[k] % len(stacked)
            stacked.insert(axis, stacked.pop(0))
            self.set(value, TensorInfo(info.dtype, tuple(stacked)), op)


def _within_budget(info: TensorInfo) -> bool:
    """Whether a result is known to have at most FOLD_LIMIT elements."""
    if not info.is_static:
        return False
    count = 1
    for d in info.shape:  # exact integers: np.prod would wrap around on huge shapes
        count *= d
    return count <= FOLD_LIMIT


def _retype(value: SSAValue, new_type) -> SSAValue:
    """``value`` with type ``new_type`` (a new SSA value if the type changes)."""
    if value.type == new_type:
        return value
    return Rewriter.replace_value_with_new_type(value, new_type)


def _passes_through(body: Block, arg_index: int) -> bool:
    """Whether the body yields its condition argument unchanged (no early exit)."""
    terminator = body.last_op
    if terminator is None or not terminator.operands:
        return False
    value = terminator.operands[0]
    while True:
        if value is body.args[arg_index]:
            return True
        owner = value.owner
        if isinstance(owner, OnnxOp) and owner.ONNX_TYPE == "Identity":
            value = owner.operands[0]
            continue
        return False


def _join(a: TensorInfo, b: TensorInfo) -> TensorInfo:
    """What is known of a value that may be either ``a`` or ``b``."""
    dtype = a.dtype if a.dtype == b.dtype else None
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorInfo(dtype, None, None, True)
    shape = tuple(x if x == y else None for x, y in zip(a.shape, b.shape, strict=True))
    return TensorInfo(dtype, shape, None, a.data_dependent or b.data_dependent or shape != a.shape)


def _merge(rule: TensorInfo, declared: TensorInfo, op: Operation) -> TensorInfo:
    """Combine the rule's result with the type the IR already had."""
    dtype = rule.dtype if rule.dtype is not None else declared.dtype
    if rule.dtype is not None and declared.dtype is not None and rule.dtype != declared.dtype:
        raise PassError(
            f"{_label(op)}: inferred element type {rule.dtype} contradicts the "
            f"declared {declared.dtype}"
        )
    shape = rule.shape
    if shape is None:
        shape = declared.shape
    elif declared.shape is not None and len(declared.shape) == len(shape):
        # A dim the rule leaves open may still be known from the import.
        shape = tuple(r if r is not None else d for r, d in zip(shape, declared.shape, strict=True))
    elif declared.shape is not None and not rule.data_dependent:
        raise PassError(
            f"{_label(op)}: inferred rank {len(shape)} contradicts the declared "
            f"rank {len(declared.shape)}"
        )
    return TensorInfo(dtype, shape, rule.value, rule.data_dependent)


def _before(op: Operation):
    from xdsl.rewriter import InsertPoint

    return InsertPoint.before(op)


def _check_static(func: FuncOp) -> None:
    for op in func.walk():
        if _inside_custom(op) or op.attributes.get("onnx.data_dependent") is not None:
            # Custom ops run on the CPU as a whole; their bodies need no static shapes.
            continue
        for k, result in enumerate(op.results):
            ttype = result.type
            if isinstance(ttype, TensorType) and all(d != DYNAMIC_INDEX for d in ttype.get_shape()):
                continue
            if _behind_data_dependent(op) or _reads_runtime_values(op):
                op.attributes["onnx.data_dependent"] = UnitAttr()
                break
            raise PassError(
                f"{_label(op)}: cannot infer a static shape for result {k} "
                f"(got {_type_text(ttype)})"
            )


def _inside_custom(op: Operation) -> bool:
    parent = op.parent_op()
    while parent is not None:
        if isinstance(parent, CustomOp):
            return True
        parent = parent.parent_op()
    return False


def _behind_data_dependent(op: Operation) -> bool:
    """Whether a dynamic result of ``op`` comes from a data-dependent value."""
    for value in op.operands:
        owner = value.owner
        if isinstance(owner, Operation) and owner.attributes.get("onnx.data_dependent"):
            return True
    return False


def _reads_runtime_values(op: Operation) -> bool:
    """Whether a dynamic result of ``op`` can only come from runtime data: every operand
    has a static shape (so no input pin is missing), yet the result's size is unknown,
    as when reduction axes, pads, a range or a branch condition are read from a tensor
    that is not a constant, or a Loop body slices by its iteration counter."""
    return all(is_static(v.type) for v in op.operands)


def _type_text(ttype) -> str:
    import io

    from neuron_ir.ir import NeuronPrinter

    stream = io.StringIO()
    NeuronPrinter(stream=stream).print_attribute(ttype)
    return stream.getvalue()
