"""``lower-control-flow``: remove ONNX If/Loop where possible, else lower to ``scf``.

- An ``onnx.If`` whose condition is a constant is replaced by the taken branch.
- An ``onnx.Loop`` with a constant trip count and no early exit is unrolled (up to
  ``max-unroll`` iterations); scan outputs are stacked with Unsqueeze + Concat.
- Every other If becomes ``scf.if`` and every other Loop ``scf.while``, which the
  interpreter runs and later passes keep on the CPU. Scan outputs of a while loop
  grow by Concat each iteration.

Run it after ``shape-inference``: the unrolled code keeps the body's inferred types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import arith, scf, tensor
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    FunctionType,
    IndexType,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    i1,
    i64,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern
from xdsl.rewriter import InsertPoint

from dialects.onnx import (
    AddOp,
    AndOp,
    ConcatOp,
    ConstantOp,
    IdentityOp,
    IfOp,
    LessOp,
    LoopOp,
    OnnxOp,
    UnsqueezeOp,
)
from neuron_ir.errors import PassError
from neuron_ir.ir.attrs import constant_array
from neuron_ir.ir.util import constant_op


def _const_value(value: SSAValue | None) -> np.ndarray | None:
    if value is None:
        return None
    owner = value.owner
    if isinstance(owner, ConstantOp):
        return constant_array(owner.value)
    return None


def _yields_true_or_passes(body: Block) -> bool:
    """No early exit: the body's condition output is constant true or its cond input."""
    out = body.last_op.operands[0]  # type: ignore[union-attr]
    while True:
        if out is body.args[1]:
            return True
        value = _const_value(out)
        if value is not None:
            return bool(np.asarray(value).all())
        owner = out.owner
        if isinstance(owner, IdentityOp):
            out = owner.operands[0]
            continue
        return False


@dataclass(frozen=True)
class LowerControlFlowPass(ModulePass):
    """Inline constant Ifs, unroll counted Loops, lower the rest to scf."""

    name = "lower-control-flow"

    max_unroll: int = 64
    """Loops with more iterations than this become scf.while instead."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.max_unroll < 0:
            raise PassError("max-unroll must not be negative")
        # Regions first, so that a body is already lowered when its If/Loop is unrolled
        # or inlined; nothing the pattern creates needs lowering again.
        PatternRewriteWalker(
            LowerIfAndLoop(self.max_unroll), walk_regions_first=True, apply_recursively=False
        ).rewrite_module(op)
        # An inlined data-dependent branch may yield a less precise type than the If
        # declared (the graph output's declared shape): the signature follows the body.
        for func in op.ops:
            if isinstance(func, FuncOp) and func.body.blocks:
                ret = func.body.block.last_op
                if isinstance(ret, ReturnOp):
                    func.function_type = FunctionType.from_lists(
                        [a.type for a in func.body.block.args], [v.type for v in ret.operands]
                    )


@dataclass
class LowerIfAndLoop(RewritePattern):
    """The rewrite pattern of the pass: one onnx.If or onnx.Loop at a time."""

    max_unroll: int

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if isinstance(op, IfOp):
            self.lower_if(op, rewriter)
        elif isinstance(op, LoopOp):
            self.lower_loop(op, rewriter)

    # -- If --

    def lower_if(self, op: IfOp, rewriter: PatternRewriter) -> None:
        cond = _const_value(op.cond)
        if cond is not None:
            taken = op.then_branch if bool(np.asarray(cond).reshape(-1)[0]) else op.else_branch
            _inline(taken.block, op, rewriter)
            return
        flag = _scalar_i1(op.cond, op, rewriter)
        regions = []
        for region in (op.then_branch, op.else_branch):
            block = region.block
            region.detach_block(block)
            _retarget_yield(block, scf.YieldOp)
            regions.append(Region(block))
        new = scf.IfOp(flag, [r.type for r in op.results], regions[0], regions[1])
        _keep_name(op, new)
        rewriter.replace(op, new)

    # -- Loop --

    def lower_loop(self, op: LoopOp, rewriter: PatternRewriter) -> None:
        trip = _const_value(op.M)
        cond = _const_value(op.cond)
        body = op.body.block
        no_early_exit = op.cond is None or (
            cond is not None and bool(np.asarray(cond).all()) and _yields_true_or_passes(body)
        )
        if op.cond is not None and cond is not None and not bool(np.asarray(cond).all()):
            # Never entered: the results are the initial values and empty scans.
            self.unroll(op, 0, rewriter)
            return
        if trip is not None and no_early_exit:
            count = int(np.asarray(trip).reshape(-1)[0])
            if count <= self.max_unroll:
                self.unroll(op, max(count, 0), rewriter)
                return
        self.to_while(op, rewriter)

    def unroll(self, op: LoopOp, count: int, rewriter: PatternRewriter) -> None:
        body = op.body.block
        carried = list(op.v_initial)
        n_carried = len(carried)
        scans: list[list[SSAValue]] = [[] for _ in op.results[n_carried:]]
        before = InsertPoint.before(op)
        base = op.onnx_node_name() or "loop"
        true_const = constant_op(np.array(True), f"{base}/cond")
        rewriter.insert(true_const, before)
        for i in range(count):
            index = constant_op(np.array(i, dtype=np.int64), f"{base}/iter_{i}")
            rewriter.insert(index, before)
            mapping: dict[SSAValue, SSAValue] = {
                body.args[0]: index.results[0],
                body.args[1]: true_const.results[0],
            }
            for arg, value in zip(body.args[2:], carried, strict=True):
                mapping[arg] = value
            for inner in list(body.ops)[:-1]:
                clone = inner.clone(value_mapper=mapping)
                rewriter.insert(clone, before)
            yielded = [mapping.get(v, v) for v in body.last_op.operands]  # type: ignore
            carried = yielded[1 : 1 + n_carried]
            for acc, value in zip(scans, yielded[1 + n_carried :], strict=True):
                acc.append(value)
        replacements: list[SSAValue] = list(carried)
        for result, acc in zip(op.results[n_carried:], scans, strict=True):
            replacements.append(_stack(acc, result.type, base, rewriter, before))
        rewriter.replace(op, [], replacements)

    def to_while(self, op: LoopOp, rewriter: PatternRewriter) -> None:
        """``while (i < M && cond) { body }`` with scan outputs grown by Concat."""
        before = InsertPoint.before(op)
        base = op.onnx_node_name() or "loop"
        body = op.body.block
        n_carried = len(op.v_initial)
        i64_scalar = TensorType(i64, [])
        bool_scalar = TensorType(i1, [])
        zero = constant_op(np.array(0, np.int64), f"{base}/i0")
        one = constant_op(np.array(1, np.int64), f"{base}/one")
        true_const = constant_op(np.array(True), f"{base}/true")
        rewriter.insert([zero, one, true_const], before)
        limit = op.M if op.M is not None else None
        cond0 = op.cond if op.cond is not None else true_const.results[0]
        accs0 = []
        scan_types = []
        for result in op.results[n_carried:]:
            ttype = result.type
            if not isinstance(ttype, TensorType):
                raise PassError(
                    f"loop '{base}': scan output of unknown rank cannot be "
                    "lowered; run shape-inference first"
                )
            inner = list(ttype.get_shape())[1:]
            if any(d == DYNAMIC_INDEX for d in inner):
                raise PassError(f"loop '{base}': scan output with dynamic per-step shape")
            from neuron_ir.ir.util import dtype_of

            empty = constant_op(
                np.zeros([0, *inner], dtype=dtype_of(ttype.element_type)), f"{base}/scan_init"
            )
            rewriter.insert(empty, before)
            scan_type = TensorType(ttype.element_type, [DYNAMIC_INDEX, *inner])
            # The carried accumulator grows: its type has a dynamic leading dim.
            widen = IdentityOp.build(operands=[empty.results[0]], result_types=[scan_type])
            rewriter.insert(widen, before)
            accs0.append(widen.results[0])
            scan_types.append(scan_type)
        inits = [zero.results[0], cond0, *op.v_initial, *accs0]
        types = [i64_scalar, cond0.type, *[v.type for v in op.v_initial], *scan_types]

        # before region: keep going while i < M (if M is given) and cond
        before_block = Block(arg_types=types)
        i_arg, c_arg = before_block.args[0], before_block.args[1]
        go = c_arg
        if limit is not None:
            less = LessOp.build(operands=[i_arg, limit], result_types=[bool_scalar])
            before_block.add_op(less)
            both = AndOp.build(operands=[less.results[0], c_arg], result_types=[bool_scalar])
            before_block.add_op(both)
            go = both.results[0]
        extract = tensor.ExtractOp(go, [], i1)
        before_block.add_op(extract)
        before_block.add_op(scf.ConditionOp(extract.result, *before_block.args))

        # after region: the body, then i + 1 and the grown accumulators
        after_block = Block(arg_types=types)
        a_args = after_block.args
        mapping: dict[SSAValue, SSAValue] = {body.args[0]: a_args[0], body.args[1]: a_args[1]}
        for arg, value in zip(body.args[2:], a_args[2 : 2 + n_carried], strict=True):
            mapping[arg] = value
        for inner_op in list(body.ops)[:-1]:
            after_block.add_op(inner_op.clone(value_mapper=mapping))
        yielded = [mapping.get(v, v) for v in body.last_op.operands]  # type: ignore
        next_i = AddOp.build(operands=[a_args[0], one.results[0]], result_types=[i64_scalar])
        after_block.add_op(next_i)
        next_cond = yielded[0] if op.cond is not None else a_args[1]
        if next_cond.type != types[1]:
            cast = IdentityOp.build(operands=[next_cond], result_types=[types[1]])
            after_block.add_op(cast)
            next_cond = cast.results[0]
        grown = []
        for acc, step_value, ttype in zip(
            a_args[2 + n_carried :], yielded[1 + n_carried :], scan_types, strict=True
        ):
            axes = constant_op(np.array([0], np.int64))
            after_block.add_op(axes)
            step_shape = [1, *ttype.get_shape()[1:]]
            unsq = UnsqueezeOp.build(
                operands=[step_value, axes.results[0]],
                result_types=[TensorType(ttype.element_type, step_shape)],
            )
            after_block.add_op(unsq)
            cat = ConcatOp.build(
                operands=[[acc, unsq.results[0]]],
                result_types=[ttype],
                properties={"axis": IntegerAttr(0, i64)},
            )
            after_block.add_op(cat)
            grown.append(cat.results[0])
        carried_out = []
        for value, ttype in zip(yielded[1 : 1 + n_carried], types[2 : 2 + n_carried], strict=True):
            if value.type != ttype:
                cast = IdentityOp.build(operands=[value], result_types=[ttype])
                after_block.add_op(cast)
                value = cast.results[0]
            carried_out.append(value)
        after_block.add_op(scf.YieldOp(next_i.results[0], next_cond, *carried_out, *grown))

        loop = scf.WhileOp(inits, types, Region(before_block), Region(after_block))
        _keep_name(op, loop)
        rewriter.insert(loop, before)
        results = list(loop.res[2 : 2 + n_carried])
        for k, result in enumerate(op.results[n_carried:]):
            grown_value = loop.res[2 + n_carried + k]
            if grown_value.type != result.type:
                # The static type shape-inference found, asserted on the grown value.
                ident = IdentityOp.build(operands=[grown_value], result_types=[result.type])
                rewriter.insert(ident, before)
                grown_value = ident.results[0]
            results.append(grown_value)
        rewriter.replace(op, [], results)


def _inline(block: Block, op: Operation, rewriter: PatternRewriter) -> None:
    terminator = block.last_op
    values = list(terminator.operands)  # type: ignore[union-attr]
    rewriter.erase(terminator)  # type: ignore[arg-type]
    rewriter.inline_block(block, InsertPoint.before(op))
    rewriter.replace(op, [], values)


def _retarget_yield(block: Block, yield_cls) -> None:
    terminator = block.last_op
    values = list(terminator.operands)  # type: ignore[union-attr]
    terminator.detach()  # type: ignore[union-attr]
    terminator.erase()  # type: ignore[union-attr]
    block.add_op(yield_cls(*values))


def _scalar_i1(value: SSAValue, op: Operation, rewriter: PatternRewriter) -> SSAValue:
    """An ``i1`` scalar from a one-element ``tensor<i1>`` condition."""
    ttype = value.type
    rank = len(ttype.get_shape()) if isinstance(ttype, TensorType) else 0
    indices = []
    ops: list[Operation] = []
    for _ in range(rank):
        zero = arith.ConstantOp(IntegerAttr(0, IndexType()))
        ops.append(zero)
        indices.append(zero.result)
    extract = tensor.ExtractOp(value, indices, i1)
    ops.append(extract)
    rewriter.insert(ops, InsertPoint.before(op))
    return extract.result


def _stack(
    values: list[SSAValue], ttype, base: str, rewriter: PatternRewriter, where: InsertPoint
) -> SSAValue:
    from neuron_ir.ir.util import dtype_of

    if not isinstance(ttype, TensorType):
        raise PassError(f"loop '{base}': scan output of unknown rank; run shape-inference first")
    if not values:
        shape = [0 if d == DYNAMIC_INDEX else d for d in ttype.get_shape()]
        shape[0] = 0
        empty = constant_op(
            np.zeros(shape, dtype=dtype_of(ttype.element_type)), f"{base}/empty_scan"
        )
        rewriter.insert(empty, where)
        return empty.results[0]
    axes = constant_op(np.array([0], np.int64), f"{base}/stack_axes")
    rewriter.insert(axes, where)
    parts = []
    for value in values:
        inner = value.type.get_shape() if isinstance(value.type, TensorType) else ()
        unsq = UnsqueezeOp.build(
            operands=[value, axes.results[0]],
            result_types=[TensorType(ttype.element_type, [1, *inner])],
        )
        rewriter.insert(unsq, where)
        parts.append(unsq.results[0])
    shape = list(ttype.get_shape())
    shape[0] = len(values)
    cat = ConcatOp.build(
        operands=[parts],
        result_types=[TensorType(ttype.element_type, shape)],
        properties={"axis": IntegerAttr(0, i64)},
    )
    rewriter.insert(cat, where)
    return cat.results[0]


def _keep_name(old: Operation, new: Operation) -> None:
    name = old.attributes.get("onnx.name")
    if isinstance(name, StringAttr):
        new.attributes["onnx.name"] = name


__all__ = ["LowerControlFlowPass", "OnnxOp"]
