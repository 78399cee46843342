"""Plan-time fusion of the interpreter: a producer and the elementwise ops after it run
as one step, in one chunk per core.

A region starts at a producer (Conv, MatMul, Gemm) and takes in the later ops of the
same block that read its values, while they are:

* ``BatchNormalization`` (inference mode, constant statistics) right after a Conv whose
  weight and bias are constants: folded into the Conv, w' = w k, b' = (b - mean) k +
  bias with k = scale / sqrt(var + eps), computed once in float64 and rounded to the
  weight type (what onnxruntime does).  This is the only region rewrite that changes
  rounding (the reduction chains and sibling products below also do): the fused result
  differs from the unfused one by a few float32 ulp of the output, which
  ``tests/test_fusion.py`` bounds.
* elementwise ops (``_ELEMENTWISE``) whose result has the region's type, whatever mix of
  region values and outside operands (which must broadcast into the region) they read:
  a DAG, so BERT's Gelu (the biased product is read by Div and by Mul) is one region;
* last, one row-wise op (Softmax, LogSoftmax, LayerNormalization) whose reduced axes
  the chunks leave whole.

Every value of the region but the last must be used only inside it.  The step runs
where the region's last op stood: every outside operand of a region op is defined
before that op, hence before the last one, and the planner counts the region's operand
reads at that position so nothing is freed early.

At run time the product is computed by the same plan as its kernel
(``parallel.MatmulPlan``, ``nn.Conv2dPlan``: a GEMM's columns or rows, a batched
product's matrices, a convolution's output rows, one chunk per core), so it rounds
exactly as the unfused kernel does.  When those chunks are slices along an axis the
region's ops can split too, each chunk then runs the region's ops on its own slice,
on data still in cache; otherwise the region's ops run in a second split pass.  Each
op on a chunk is the op's own kernel (elementwise and row-wise kernels give the same
values on a slice as on the whole), or, where it is the last reader of a value the
region owns, the same ufunc in place, in the same operand order: bit-identical to the
unfused op.  Gemm, grouped convolutions and integer or float16 products run their
kernel whole, then the region.  A run-time shape that would broadcast the region
raises ``_Unfusable`` and the unfused steps run instead.

Row chains: when a region's result is read by a region whose Conv maps rows one to one
(1x1, stride 1, no padding), both split by the same output rows, and nothing else reads
the first result before the chain ends, the regions run in one split, each chunk
running every region's chunk in turn on rows its own thread just wrote.  ResNet-50's
bottlenecks (3x3, then the 1x1 expansion with its residual, then the next block's 1x1
reduction) take one hand-off instead of three: 54 splits a run become 28.  Each chunk is
the call the region's own step makes at the same bounds, so the chain is bit-identical
to the regions run one by one, which is what runs when the run-time shapes do not allow
it (a batch split by images, an image split by channels).

Stack chains: when a region whose product is a batched MatMul (attention's scores,
split by heads) is read only by another MatMul (the scores times V), and both split
their stacks the same way, the second product runs in the same split: each chunk runs
the region's chunk, then its heads of the second product on the probabilities its own
thread just wrote.  BERT saves one hand-off a layer.  Both chunks are the calls the
unfused steps make at the same bounds: bit-identical.

Reduction chains: when a region whose product is a MatMul by a constant 2-D weight
splits by columns and its result is read only by a second such region (BERT's FFN:
the Gelu region, then the product back to the hidden size with bias, residual and
LayerNormalization), each chunk also multiplies its columns by the matching rows of
the second weight: a partial sum of the second product over a slice of its inner
dimension.  After the one join the partials are added in chunk order and the second
region's ops run on the sum.  BERT saves one hand-off a layer (60 splits a run become
48).  The second product's sum is reassociated: close to the unfused result (a few
float32 ulp, bounded by the tests), not equal to it.

Decomposed Gelu: the five region ops exporters write for Gelu (x / c, Erf, + 1, then
x * and * 0.5, or * 0.5 and x *; see ``_match_gelu_erf``) run as one region op, one
compiled pass over the region's buffer (``native.gelu_erf_in_place``) that does their
float32 operations in their order: bit-identical to the five kernels, which run
instead where the compiled pass does not take the data.

Convolution tails: a 2-D float32 Conv's bias (its own, or the folded BatchNorm's) with
the Add of a residual and/or the Relu or LeakyRelu that open its region run as one
region op, the product computed without its bias.  Where the compiled convolution runs
(``Conv2dPlan.fuse_tail``) the op is done in the product's epilogue, on each tile
before it leaves the registers; otherwise it is one compiled pass over the region's
buffer (``native.conv_tail_in_place``) instead of three.  Either way each value is
rounded as the separate steps round it.

Sibling products: MatMuls that read one activation and constant 2-D weights with the
same rows (BERT's query, key and value projections), each with its constant bias Add
or none, run as one product against the weights side by side, and their results are
column views of it.  One wide GEMM splits over the cores better than three narrow ones
(measured 125-139 GFLOP/s for 128 x 768 x 2304-3072 against 78-85 for 128 x 768 x 768,
both cores).  The step runs where the first sibling stood: its inputs are the shared
activation and constants, which the plan holds from the start.  Concatenating changes
where OpenBLAS cuts the columns, so the siblings round like the unfused products only
to float32 accuracy, not bit for bit (``tests/test_fusion.py`` bounds the difference).

The onnx-level interpreter stays the reference: ``disabled()`` plans without fusion,
and the tests compare both plans on the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from xdsl.dialects.builtin import TensorType, f32
from xdsl.ir import Operation, SSAValue

from dialects.onnx import ConstantOp, OnnxOp

from ..errors import InterpreterError
from ..ir.attrs import constant_array, describe_op, onnx_attrs
from ..kernels import KERNELS, native, parallel
from ..kernels.nn import Conv2dPlan, layer_norm_in_place, matmul_plan, softmax_in_place
from ..kernels.tensor import _F32_0_01, relu
from .onnx_ops import _onnx_handler

_PRODUCERS = frozenset({"Conv", "MatMul", "Gemm"})
_IN_PLACE = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _relu_over_input(inputs: list, attrs: dict) -> bool:
    relu(inputs[0], out=inputs[0])
    return True


def _gelu_erf_over_input(inputs: list, attrs: dict) -> bool:
    return attrs["native"] and native.gelu_erf_in_place(
        inputs[0], attrs["divide"], attrs["c"], attrs["one"], attrs["half"], attrs["half_first"]
    )


def _tail_activation(y: np.ndarray, attrs: dict) -> np.ndarray:
    """The tail's activation on y, in place where the kernel allows it."""
    if attrs["activation"] == "Relu":
        return relu(y, out=y)
    if attrs["activation"] == "LeakyRelu":
        y[...] = KERNELS["LeakyRelu"]([y], {"alpha": attrs["alpha"]}, 1)[0]
    return y


def _conv_tail_numpy(y: np.ndarray, residual, bias, attrs: dict) -> np.ndarray:
    """A convolution's bias, residual Add and activation on y in place, as the unfused
    steps compute them."""
    with np.errstate(all="ignore"):
        if bias is not None:
            y += bias
        if residual is not None:
            np.add(y, residual, out=y)
        return _tail_activation(y, attrs)


def _conv_tail_steps(inputs: list, attrs: dict, n_out: int) -> list[np.ndarray]:
    x, residual, bias = inputs
    return [_conv_tail_numpy(x.copy(), residual, bias, attrs)]


def _conv_tail_over_input(inputs: list, attrs: dict) -> bool:
    x, residual, bias = inputs
    if not native.conv_tail_in_place(x, bias, residual, attrs["activation"], attrs["alpha"]):
        _conv_tail_numpy(x, residual, bias, attrs)
    return True


# Ops that can write their result over their first input, when the region owns it:
# each returns False (input untouched) where that would not give the kernel's result.
# Softmax and LayerNormalization end most of BERT's regions; done over the region's
# buffer they skip a copy in and a copy back of the whole value.
_OVER_INPUT: dict[str, Callable[[list, dict], bool]] = {
    "Relu": _relu_over_input,
    "Softmax": softmax_in_place,
    "LayerNormalization": layer_norm_in_place,
    "GeluErf": _gelu_erf_over_input,  # the decomposed Gelu (see _match_gelu_erf)
    "ConvTail": _conv_tail_over_input,  # a Conv's bias, Add, activation (_match_conv_tail)
}
_ELEMENTWISE = frozenset(
    {
        *_IN_PLACE,
        "Pow",
        "Relu",
        "Erf",
        "Tanh",
        "Sigmoid",
        "Exp",
        "Neg",
        "Abs",
        "Sqrt",
        "Reciprocal",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Softplus",
        "Softsign",
        "Mish",
        "ThresholdedRelu",
        "Clip",
    }
)
_ROWWISE = frozenset({"Softmax", "LogSoftmax", "LayerNormalization"})
_WINDOW = 48  # how far past the producer a region looks for its ops

_enabled = True


@contextmanager
def disabled() -> Iterator[None]:
    """Interpreters planned inside the block run every op by itself (the reference)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


@dataclass
class Group:
    """One fused region: the producer, an optional folded BatchNormalization, then the
    region's other ops in block order."""

    ops: list[Operation]
    batchnorm: Operation | None = None

    @property
    def kinds(self) -> list[str]:
        return [_type(op) for op in self.ops]

    @property
    def epilogues(self) -> list[Operation]:
        """The region's ops after the producer and its folded BatchNormalization."""
        return self.ops[2:] if self.batchnorm is not None else self.ops[1:]


def _type(op: Operation) -> str:
    return op.ONNX_TYPE if isinstance(op, OnnxOp) else op.name


def _inputs(op: Operation) -> list[SSAValue | None]:
    return op.onnx_inputs() if isinstance(op, OnnxOp) else list(op.operands)


def _single_user(value: SSAValue, block_ops: set[Operation]) -> Operation | None:
    uses = list(value.uses)
    if len(uses) != 1:
        return None
    user = uses[0].operation
    return user if user in block_ops else None


def _constant(value: SSAValue | None) -> np.ndarray | None:
    """The value of a constant, seen through Identity ops (exporters wrap initializers
    in them: TorchScript's BERT passes every Linear bias through one)."""
    while (
        value is not None
        and isinstance(value.owner, OnnxOp)
        and value.owner.ONNX_TYPE == "Identity"
    ):
        value = value.owner.operands[0] if value.owner.operands else None
    if value is None:
        return None
    owner = value.owner
    if isinstance(owner, ConstantOp):
        return constant_array(owner.properties["value"])
    return None


def _foldable_batchnorm(conv: Operation, bn: Operation) -> bool:
    inputs = bn.onnx_inputs()  # type: ignore[attr-defined]
    if inputs[0] is not conv.results[0] or len(inputs) != 5:
        return False
    if int(onnx_attrs(bn).get("training_mode", 0)):
        return False
    if any(r is not None and r.uses for r in bn.onnx_outputs()[1:]):  # type: ignore
        return False
    conv_in = conv.onnx_inputs()  # type: ignore[attr-defined]
    w = _constant(conv_in[1])
    if w is None or w.dtype not in (np.float32, np.float64):
        return False
    if len(conv_in) > 2 and conv_in[2] is not None and _constant(conv_in[2]) is None:
        return False
    stats = [_constant(v) for v in inputs[1:]]
    return all(s is not None and s.shape == (w.shape[0],) for s in stats)


def _same_static_type(a: SSAValue, b: SSAValue) -> bool:
    """False only when both types are known and differ (the op would broadcast the
    region's value to a bigger shape, or change its type)."""
    ta, tb = a.type, b.type
    if isinstance(ta, TensorType) and isinstance(tb, TensorType):
        return ta == tb
    return True


def _absorbable(op: Operation, members: set[SSAValue], region_value: SSAValue) -> bool:
    kind = _type(op)
    if not isinstance(op, OnnxOp) or kind not in _ELEMENTWISE | _ROWWISE:
        return False
    if kind not in KERNELS or not op.results:
        return False
    if any(r.uses for r in op.results[1:]):  # LayerNormalization's Mean/InvStdDev
        return False
    operands = [v for v in _inputs(op) if v is not None]
    if kind in _ROWWISE and (not operands or operands[0] not in members):
        return False
    return any(v in members for v in operands) and _same_static_type(region_value, op.results[0])


def _valid_prefix(ops: list[Operation]) -> bool:
    """Every value but the last op's first result is read only inside ``ops``."""
    inside = set(ops)
    for k, op in enumerate(ops):
        results = op.results[1:] if k == len(ops) - 1 else op.results
        for r in results:
            if any(use.operation not in inside for use in r.uses):
                return False
    return True


def find_groups(ops: Sequence[Operation], taken: set[Operation] | None = None) -> list[Group]:
    """The fusable regions among one block's ops (each op in at most one region, none
    of the ``taken`` ones)."""
    block_ops = set(ops)
    taken = set(taken or ())
    groups = []
    for i, op in enumerate(ops):
        if op in taken or not isinstance(op, OnnxOp) or _type(op) not in _PRODUCERS:
            continue
        if len(op.results) != 1:
            continue
        base = [op]
        batchnorm = None
        value = op.results[0]
        user = _single_user(value, block_ops)
        if (
            _type(op) == "Conv"
            and user is not None
            and user not in taken
            and _type(user) == "BatchNormalization"
            and _foldable_batchnorm(op, user)
        ):
            batchnorm = user
            base.append(user)
            value = user.results[0]
        members = {r for o in base for r in o.results}
        absorbed: list[Operation] = []
        for later in ops[i + 1 : i + 1 + _WINDOW]:
            if later in base:
                continue
            if not any(v in members for v in later.operands):
                continue
            if later in taken or not _absorbable(later, members, value):
                break
            absorbed.append(later)
            members.update(later.results)
            if _type(later) in _ROWWISE:
                break
        chosen = None
        for k in range(len(absorbed), 0, -1):
            if _valid_prefix(base + absorbed[:k]):
                chosen = base + absorbed[:k]
                break
        if chosen is None:
            if batchnorm is None or not _valid_prefix(base):
                continue
            chosen = base
        groups.append(Group(chosen, batchnorm))
        taken.update(chosen)
    return groups


def _rowwise_conv(op: Operation) -> bool:
    """A 2-D Conv whose output row r reads only input row r (1x1, stride 1, no
    padding, one group), with constant weights."""
    if _type(op) != "Conv":
        return False
    w = _constant(op.onnx_inputs()[1])  # type: ignore[attr-defined]
    if w is None or w.ndim != 4 or w.shape[2:] != (1, 1):
        return False
    attrs = onnx_attrs(op)
    if int(attrs.get("group", 1)) != 1 or any(int(v) != 1 for v in attrs.get("strides", [])):
        return False
    if any(int(v) for v in attrs.get("pads", [])):
        return False
    return attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")


def find_chains(ops: Sequence[Operation], groups: list[Group]) -> list[list[Group]]:
    """Runs of regions each of whose producer is a row-wise Conv reading the previous
    region's result (ResNet's 3x3 conv, then its 1x1 expansion with the residual Add,
    then the next block's 1x1 reduction): row chunks can flow through all of them
    without waiting for the other cores.  A chain stops before a region whose input is
    read, before the chain's end, by an op outside it."""
    index = {op: i for i, op in enumerate(ops)}
    by_producer_input: dict[SSAValue, Group] = {}
    for group in groups:
        producer = group.ops[0]
        if _rowwise_conv(producer):
            by_producer_input.setdefault(producer.onnx_inputs()[0], group)  # type: ignore
    chains = []
    taken: set[int] = set()
    for group in groups:
        if id(group) in taken or _type(group.ops[0]) != "Conv":
            continue
        chain = [group]
        while True:
            value = chain[-1].ops[-1].results[0]
            nxt = by_producer_input.get(value)
            if nxt is None or id(nxt) in taken or nxt in chain:
                break
            end = index[nxt.ops[-1]]
            inside = {op for g in chain + [nxt] for op in g.ops}
            early = [
                use.operation
                for g in chain
                for use in g.ops[-1].results[0].uses
                if use.operation not in inside
                and (use.operation not in index or index[use.operation] < end)
            ]
            if early:
                break
            chain.append(nxt)
        if len(chain) > 1:
            chains.append(chain)
            taken.update(id(g) for g in chain)
    return chains


def find_stack_chains(groups: list[Group], taken: set[Operation]) -> list[tuple[Group, Operation]]:
    """(region, MatMul) pairs: a region whose producer is a MatMul, whose result is
    read once, by a MatMul outside every region and not ``taken``, as its first
    operand."""
    in_groups = {op for group in groups for op in group.ops}
    found = []
    for group in groups:
        if _type(group.ops[0]) != "MatMul" or group.batchnorm is not None:
            continue
        uses = list(group.ops[-1].results[0].uses)
        if len(uses) != 1 or uses[0].index != 0:
            continue
        reader = uses[0].operation
        if _type(reader) != "MatMul" or reader in in_groups or reader in taken:
            continue
        if reader.parent_block() is not group.ops[0].parent_block():
            continue
        found.append((group, reader))
    return found


def find_reduction_chains(groups: list[Group]) -> list[tuple[Group, Group]]:
    """(first, second) region pairs: each producer a MatMul by a constant 2-D weight,
    the first region's result read once, as the second's activation (BERT's FFN: the
    Gelu region, then the product back to the hidden size with its bias, residual and
    LayerNormalization).  A region is in one pair at most."""
    by_producer = {group.ops[0]: group for group in groups}
    found = []
    paired: set[int] = set()
    for group in groups:
        if id(group) in paired or not _matmul_by_constant(group):
            continue
        uses = list(group.ops[-1].results[0].uses)
        if len(uses) != 1 or uses[0].index != 0:
            continue
        second = by_producer.get(uses[0].operation)
        if second is None or id(second) in paired or not _matmul_by_constant(second):
            continue
        found.append((group, second))
        paired.update((id(group), id(second)))
    return found


def _matmul_by_constant(group: Group) -> bool:
    producer = group.ops[0]
    if _type(producer) != "MatMul" or group.batchnorm is not None:
        return False
    w = _constant(producer.onnx_inputs()[1])  # type: ignore[attr-defined]
    return w is not None and w.ndim == 2


@dataclass
class Siblings:
    """MatMuls of one activation by constant weights with the same rows, each with its
    bias Add (all of them, or none)."""

    matmuls: list[Operation]
    adds: list[Operation]  # empty when none has a bias
    widths: list[int]  # each product's columns
    weight: np.ndarray  # the weights side by side, (K, sum of widths)
    bias: np.ndarray | None  # the biases end to end

    @property
    def members(self) -> list[Operation]:
        return self.matmuls + self.adds

    @property
    def outputs(self) -> list[SSAValue]:
        return [op.results[0] for op in (self.adds or self.matmuls)]


def _bias_add(
    matmul: Operation, w: np.ndarray, block_ops: set[Operation]
) -> tuple[Operation, np.ndarray] | None:
    """The Add that alone reads ``matmul``'s result (weight ``w``) with a constant 1-D
    bias of its width."""
    user = _single_user(matmul.results[0], block_ops)
    if user is None or _type(user) != "Add" or len(user.results) != 1:
        return None
    operands = _inputs(user)
    other = operands[1] if operands[0] is matmul.results[0] else operands[0]
    bias = _constant(other)
    if bias is None or bias.shape != (w.shape[1],) or bias.dtype != w.dtype:
        return None
    if not _same_static_type(matmul.results[0], user.results[0]):
        return None
    return user, bias


def find_siblings(ops: Sequence[Operation]) -> list[Siblings]:
    """Sibling products among one block's ops (see the module docstring)."""
    block_ops = set(ops)
    by_input: dict[tuple[SSAValue, int, Any], list[tuple[Operation, np.ndarray]]] = {}
    for op in ops:
        if _type(op) != "MatMul" or not isinstance(op, OnnxOp) or len(op.results) != 1:
            continue
        x, w_value = op.onnx_inputs()
        w = _constant(w_value)
        if x is None or w is None or w.ndim != 2 or w.dtype not in _FLOATS:
            continue
        if _constant(x) is not None:
            continue
        by_input.setdefault((x, w.shape[0], w.dtype), []).append((op, w))
    found = []
    for pairs in by_input.values():
        if len(pairs) < 2:
            continue
        matmuls = [op for op, _ in pairs]
        weights = [w for _, w in pairs]
        adds = [_bias_add(op, w, block_ops) for op, w in pairs]
        if all(a is not None for a in adds):
            ops_and_biases: list[tuple[Operation, np.ndarray]] = adds  # type: ignore
            add_ops = [a for a, _ in ops_and_biases]
            bias = np.concatenate([b for _, b in ops_and_biases])
        elif all(a is None for a in adds):
            add_ops, bias = [], None
        else:
            continue
        widths = [w.shape[1] for w in weights]
        weight = np.ascontiguousarray(np.concatenate(weights, axis=1))
        found.append(Siblings(matmuls, add_ops, widths, weight, bias))
    return found


@dataclass
class Fusions:
    """What the planner needs: each fused op's step (None if absorbed) and the index
    (in the block) where its region runs."""

    steps: dict[Operation, Callable | None] = field(default_factory=dict)
    anchor: dict[Operation, int] = field(default_factory=dict)


def plan_fusions(planner: Any, ops: Sequence[Operation]) -> Fusions:
    """Fused steps for the regions of one block (none when fusion is disabled)."""
    fusions = Fusions()
    if not _enabled:
        return fusions
    index = {op: i for i, op in enumerate(ops)}
    taken: set[Operation] = set()
    for siblings in find_siblings(ops):
        members = siblings.members
        first = min(index[op] for op in members)
        for op in members:
            fusions.steps[op] = None
            fusions.anchor[op] = first
        fusions.steps[ops[first]] = _siblings_step(
            planner, siblings, sorted(members, key=index.get)
        )
        taken.update(members)
    groups = find_groups(ops, taken)
    chained = {id(g): chain for chain in find_chains(ops, groups) for g in chain}
    stacked = {id(g): reader for g, reader in find_stack_chains(groups, taken)}
    reduced: dict[int, tuple[Group, Group]] = {}
    for pair in find_reduction_chains(groups):
        # (Row chains are of Convs, never of these MatMul regions.)
        if id(pair[0]) not in stacked and id(pair[1]) not in stacked:
            reduced[id(pair[0])] = reduced[id(pair[1])] = pair
    for group in groups:
        chain = chained.get(id(group), [group])
        reader = stacked.get(id(group))
        pair = reduced.get(id(group))
        if pair is not None:
            last = index[pair[1].ops[-1]]
        else:
            last = index[reader if reader is not None else chain[-1].ops[-1]]
        for op in group.ops:
            fusions.steps[op] = None
            fusions.anchor[op] = last
        if pair is not None:
            if group is pair[1]:
                fusions.steps[group.ops[-1]] = _reduction_chain_step(
                    _region(planner, pair[0]), _region(planner, pair[1]), group.ops[0]
                )
        elif reader is not None:
            fusions.anchor[reader] = last
            fusions.steps[reader] = _stack_chain_step(planner, _region(planner, group), reader)
        elif group is chain[-1]:
            regions = [_region(planner, g) for g in chain]
            fusions.steps[group.ops[-1]] = (
                regions[0].step
                if len(regions) == 1
                else _chain_step(regions, describe_op(group.ops[-1]))
            )
    return fusions


def _guarded(run: Callable, fallback: Sequence[Callable], label: str) -> Callable:
    """A fused step: ``run(env)``, or, for a case it does not cover (``_Unfusable``, a
    kernel's NotImplementedError), the unfused ``fallback`` steps in order.  Any other
    error names the op."""

    def step(env: list) -> None:
        try:
            run(env)
            return
        except (NotImplementedError, _Unfusable):
            pass
        except InterpreterError:
            raise
        except Exception as exc:
            raise InterpreterError(f"{label} failed: {type(exc).__name__}: {exc}") from exc
        for unfused_step in fallback:
            unfused_step(env)

    return step


def _folded_conv_inputs(conv: Operation, bn: Operation) -> tuple[np.ndarray, np.ndarray]:
    conv_in = conv.onnx_inputs()  # type: ignore[attr-defined]
    w = _constant(conv_in[1])
    b = _constant(conv_in[2]) if len(conv_in) > 2 else None
    scale, bias, mean, var = (
        _constant(v).astype(np.float64)  # type: ignore[union-attr]
        for v in bn.onnx_inputs()[1:]
    )  # type: ignore[attr-defined]
    eps = float(onnx_attrs(bn).get("epsilon", 1e-5))
    k = scale / np.sqrt(var + eps)
    w64 = w.astype(np.float64) * k.reshape((-1,) + (1,) * (w.ndim - 1))  # type: ignore
    b64 = (np.zeros_like(k) if b is None else b.astype(np.float64)) - mean
    b64 = b64 * k + bias
    folded = w64.astype(w.dtype), b64.astype(w.dtype)  # type: ignore[union-attr]
    for array in folded:  # constants of the plan, like the graph's own (see core)
        array.flags.writeable = False
    return folded


class _Unfusable(Exception):
    """A run-time case the fused step does not cover: the unfused steps run instead."""


# ---------------------------------------------------------------------------
# producers: the output's shape, how the kernel would split it, and one chunk of it


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _Whole:
    """The producer's result computed up front by its kernel (Gemm, and the products
    the plans below do not cover)."""

    parts = 0
    region_axis: int | None = None

    def __init__(self, result: np.ndarray):
        self.shape, self.dtype, self.result = result.shape, result.dtype, result

    def out(self) -> np.ndarray:
        return self.result

    def chunk(self, out: np.ndarray, lo: int, hi: int) -> None:
        pass

    def into(self, out: np.ndarray) -> None:
        pass


class _Planned:
    """A product run by the same plan as its kernel (``MatmulPlan``, ``Conv2dPlan``):
    ``parts`` chunks (0: unsplit), each a slice [lo, hi) along ``region_axis`` of the
    output when the chunks are such slices (None when they are not)."""

    def __init__(self, plan: Any, shape: tuple, region_axis: int | None):
        self.plan, self.shape, self.dtype = plan, shape, plan.dtype
        self.parts, self.region_axis = plan.parts, region_axis

    def out(self) -> np.ndarray:
        return np.empty(self.shape, dtype=self.dtype)

    def chunk(self, out: np.ndarray, lo: int, hi: int) -> None:
        self.plan.chunk(out.reshape(self.plan.shape), lo, hi)

    def into(self, out: np.ndarray) -> None:
        self.plan.into(out.reshape(self.plan.shape))


def _first_non_unit(shape: Sequence[int]) -> int | None:
    return next((a for a, n in enumerate(shape) if n != 1), None)


def _matmul(x: np.ndarray, w: np.ndarray) -> _Planned:
    """The MatMul kernel's plan for float operands of one type, and the output axis
    its chunks slice."""
    if x.dtype not in _FLOATS or w.dtype != x.dtype or x.ndim < 2 or w.ndim < 2:
        raise _Unfusable
    if x.shape[-1] != w.shape[-2]:
        raise _Unfusable
    plan, shape = matmul_plan(x, w)
    if shape is None:
        raise _Unfusable
    if plan.scheme == "cols":
        return _Planned(plan, shape, len(shape) - 1)
    if plan.scheme in ("rows", "stack"):  # the first plan axis, flattened
        lead = _first_non_unit(shape[:-1] if plan.scheme == "rows" else shape[:-2])
        whole = lead is not None and shape[lead] == plan.parts
        return _Planned(plan, shape, lead if whole else None)
    if plan.scheme == "stack-rows" and math.prod(shape[:-2]) == 1:
        return _Planned(plan, shape, len(shape) - 2)
    return _Planned(plan, shape, None)


def _producer(kind: str, args: list, attrs: dict, kernel: Callable) -> _Planned | _Whole:
    try:
        if kind == "MatMul":
            return _matmul(args[0], args[1])
        if kind == "Conv":
            plan = Conv2dPlan(args[0], args[1], args[2] if len(args) > 2 else None, attrs)
            return _Planned(plan, plan.shape, plan.axis)
    except (_Unfusable, ValueError):
        pass
    y = kernel(args, attrs, 1)[0]
    if not y.flags.writeable or any(a is not None and np.may_share_memory(y, a) for a in args):
        y = y.copy()  # the region writes in place into a fresh array only
    return _Whole(y)


# ---------------------------------------------------------------------------
# the region's ops on one chunk


@dataclass
class _RegionOp:
    kind: str
    kernel: Callable
    attrs: dict
    operands: list[tuple[str, int]]  # ("region", index) | ("outside", slot) | ("none", -1)
    in_place: int  # operand position it may overwrite, or -1
    reduced_from: int | None  # row-wise ops: first reduced axis (negative: from the end)


def _reduced_from(kind: str, attrs: dict) -> int | None:
    """A row-wise op's first reduced axis: LayerNormalization reduces axis..rank-1,
    Softmax one axis, taken here as axis..rank-1 too (chunks split only axes before)."""
    if kind not in _ROWWISE:
        return None
    return int(attrs.get("axis", -1))


def _slice_outside(array: np.ndarray, rank: int, axis: int, lo: int, hi: int) -> np.ndarray:
    j = axis - (rank - array.ndim)
    if j < 0 or array.shape[j] == 1:
        return array
    return array[(slice(None),) * j + (slice(lo, hi),)]


class _Region(NamedTuple):
    """A region's step, and what the chains need to run it chunk by chunk, or to run
    its ops on a product computed elsewhere."""

    step: Callable
    # env -> (producer, output, one-pass chunk function or None, axes, region ops the
    # product already applied)
    prepare: Callable
    out_slot: int
    axes: Callable  # (shape, dtype, env) -> the axes its ops may split; _Unfusable if none fit
    finish: Callable  # (env, product, axes) -> the region's ops on the product, result stored
    in_slot: int  # the slot of the product's first input


class _GeluErf(NamedTuple):
    """Gelu as exporters decompose it, five consecutive region ops:
    d = x / c (or x * c), e = Erf(d), a = e + one, then m = x * a, y = m * half, or
    m = a * half, y = x * m."""

    ops: list[Operation]
    x: SSAValue
    attrs: dict  # of the one region op that replaces them


def _scalar(value: SSAValue | None) -> np.ndarray | None:
    array = _constant(value)
    return array if array is not None and array.size == 1 else None


def _other(op: Operation, value: SSAValue) -> SSAValue | None:
    """The other input of a binary op that reads ``value`` once."""
    inputs = _inputs(op)
    if len(inputs) != 2 or inputs.count(value) != 1:
        return None
    return inputs[1] if inputs[0] is value else inputs[0]


def _match_gelu_erf(ops: Sequence[Operation], k: int) -> _GeluErf | None:
    """The decomposed Gelu at ``ops[k:k+5]``, its intermediate values read by nothing
    else; None if it is not there.

    The fused op computes the five ops' float32 operations in their order (one compiled
    pass, ``native.gelu_erf_in_place``), bit-identical to them; its kernel, for what the
    compiled pass does not take, runs the five ops' own kernels."""
    if k + 5 > len(ops):
        return None
    chain = list(ops[k : k + 5])
    first, erf, add, mul, half_mul = chain
    kinds = [_type(op) for op in chain]
    if kinds[1:] != ["Erf", "Add", "Mul", "Mul"] or kinds[0] not in ("Div", "Mul"):
        return None
    inputs = _inputs(first)
    if len(inputs) != 2 or inputs[0] is None:
        return None
    x = inputs[0]
    c = _scalar(inputs[1])
    if c is None and kinds[0] == "Mul":  # x * c in either order
        x, c = inputs[1], _scalar(inputs[0])
    if c is None or x is None or _inputs(erf) != [first.results[0]]:
        return None
    one = _scalar(_other(add, erf.results[0]))
    if one is None:
        return None
    # x * a, then * half (traced Hugging Face code); or a * half, then x * (tracing
    # torch's own decomposition, as the dynamo exporter does).
    half_first = _other(mul, add.results[0]) is not x
    if half_first:
        half = _scalar(_other(mul, add.results[0]))
        if _other(half_mul, mul.results[0]) is not x:
            return None
    else:
        half = _scalar(_other(half_mul, mul.results[0]))
    if half is None or any(len(list(op.results[0].uses)) != 1 for op in chain[:-1]):
        return None

    def step(op: Operation, value: SSAValue | None) -> tuple[Callable, dict, list]:
        """The op's kernel, attrs and operands: "x", "prev" (the previous op's result)
        or a constant, in the op's own operand order."""
        specs = []
        for v in _inputs(op):
            if v is x:
                specs.append(("x", None))
            elif v is value:
                specs.append(("prev", None))
            else:
                specs.append(("const", _constant(v)))
        return KERNELS[_type(op)], onnx_attrs(op), specs

    steps = [step(first, None)] + [
        step(op, prev.results[0]) for prev, op in zip(chain, chain[1:], strict=False)
    ]
    attrs = {
        "steps": steps,
        "native": all(a.dtype == np.float32 for a in (c, one, half)),
        "divide": kinds[0] == "Div",
        "c": float(c.reshape(())),
        "one": float(one.reshape(())),
        "half": float(half.reshape(())),
        "half_first": half_first,
    }
    return _GeluErf(chain, x, attrs)


def _gelu_erf_steps(inputs: list, attrs: dict, n_out: int) -> list[np.ndarray]:
    """The decomposed Gelu's five kernels in turn (what the compiled pass replaces)."""
    x, prev = inputs[0], None
    for kernel, op_attrs, specs in attrs["steps"]:
        args = [x if tag == "x" else prev if tag == "prev" else const for tag, const in specs]
        prev = kernel(args, op_attrs, 1)[0]
    return [prev]


class _ConvTail(NamedTuple):
    """A Conv's bias with the region ops right after it: Add(y, residual) and/or an
    activation (Relu or LeakyRelu).  Applied in the compiled convolution's epilogue
    (``Conv2dPlan.fuse_tail``), else one compiled pass over the region's buffer
    (``native.conv_tail_in_place``; LeakyRelu where 0 <= alpha <= 1) instead of up to
    three; the product is computed without its bias."""

    count: int  # region ops it replaces
    residual: SSAValue | None
    activation: str | None
    alpha: float
    bias: np.ndarray | None  # (C, 1, 1), or None for a Conv without one


def _match_conv_tail(group: Group, head: Operation, bias: np.ndarray | None) -> _ConvTail | None:
    """The Add(head, residual) and/or activation that open the region of a 2-D float32
    Conv (``Conv2dPlan``'s cases, as far as the types tell), each value read once."""
    conv = group.ops[0]
    x_type = _inputs(conv)[0].type  # type: ignore[union-attr]
    if (
        not isinstance(x_type, TensorType)
        or x_type.get_num_dims() != 4
        or x_type.get_element_type() != f32
        or int(onnx_attrs(conv).get("group", 1)) != 1
        or (bias is not None and bias.dtype != np.float32)
        or not group.epilogues
    ):
        return None
    value = head.results[0]
    ops = group.epilogues
    residual = None
    count = 0
    if _type(ops[0]) == "Add":
        residual = _other(ops[0], value)
        if residual is None or len(list(value.uses)) != 1:
            return None
        value, count = ops[0].results[0], 1
    activation, alpha = None, 0.0
    if count < len(ops) and _inputs(ops[count]) == [value] and len(list(value.uses)) == 1:
        kind = _type(ops[count])
        if kind in ("Relu", "LeakyRelu"):
            activation = kind
            alpha = float(onnx_attrs(ops[count]).get("alpha", _F32_0_01))
            count += 1
    if count == 0:
        return None
    shaped = None if bias is None else bias.reshape(-1, 1, 1)
    return _ConvTail(count, residual, activation, alpha, shaped)


def _region(planner: Any, group: Group) -> _Region:
    producer_op = group.ops[0]
    kind = _type(producer_op)
    kernel = KERNELS[kind]
    attrs = onnx_attrs(producer_op)
    in_values = producer_op.onnx_inputs()  # type: ignore[attr-defined]
    if group.batchnorm is not None:
        w, b = _folded_conv_inputs(producer_op, group.batchnorm)
        in_slots = [planner.slot(in_values[0])]
        folded: list[np.ndarray | None] = [w, b]
    else:
        in_slots = planner.operand_slots(in_values)
        folded = []
    head = group.ops[1] if group.batchnorm is not None else producer_op
    region_values = {head.results[0]} | {op.results[0] for op in group.epilogues}
    tail = None
    if kind == "Conv":
        has_bias = len(in_values) > 2 and in_values[2] is not None
        if group.batchnorm is not None:
            bias = folded[1]
        else:
            bias = _constant(in_values[2]) if has_bias else None
        if bias is not None or not has_bias:  # a bias known only at run time stays put
            tail = _match_conv_tail(group, head, bias)
    fixed: list[np.ndarray] = []  # plan-time operands of region ops ("fixed", index)
    # The last reader of each region value: the one op that may overwrite it.
    last_reader = {v: op for op in group.epilogues for v in _inputs(op) if v in region_values}
    # Region value k is the head's (k = 0) or region op k-1's result.
    index = {head.results[0]: 0}
    region_ops: list[_RegionOp] = []

    def operand(v: SSAValue | None) -> tuple[str, int]:
        if v is None:
            return ("none", -1)
        if v in index:
            return ("region", index[v])
        return ("outside", planner.slot(v))

    epilogues = group.epilogues
    k = 0
    residual_operand = ("none", -1)
    if tail is not None:
        residual_operand = operand(tail.residual)
        operands = [("region", 0), residual_operand, ("none", -1)]
        if tail.bias is not None:
            operands[2] = ("fixed", len(fixed))
            fixed.append(tail.bias)
        index[epilogues[tail.count - 1].results[0]] = len(index)
        region_ops.append(
            _RegionOp(
                "ConvTail",
                _conv_tail_steps,
                {"activation": tail.activation, "alpha": tail.alpha},
                operands,
                0,
                None,
            )
        )
        k = tail.count
    while k < len(epilogues):
        gelu = _match_gelu_erf(epilogues, k)
        if gelu is not None:
            # Over x when x is the region's and nothing after the Gelu reads it.
            where, i = operand(gelu.x)
            over_x = where == "region" and last_reader.get(gelu.x) in gelu.ops
            index[gelu.ops[-1].results[0]] = len(index)
            region_ops.append(
                _RegionOp(
                    "GeluErf", _gelu_erf_steps, gelu.attrs, [(where, i)], 0 if over_x else -1, None
                )
            )
            k += len(gelu.ops)
            continue
        op = epilogues[k]
        k += 1
        op_kind = _type(op)
        inputs = _inputs(op)
        operands = [operand(v) for v in inputs]
        in_place = -1
        if op_kind in _IN_PLACE or op_kind in _OVER_INPUT:
            in_place = next(
                (
                    pos
                    for pos, (where, _) in enumerate(operands)
                    if where == "region" and last_reader.get(inputs[pos]) is op
                ),
                -1,
            )
            if op_kind in _OVER_INPUT and in_place != 0:
                in_place = -1  # they write over their first input only
        op_attrs = onnx_attrs(op)
        index[op.results[0]] = len(index)
        region_ops.append(
            _RegionOp(
                op_kind,
                KERNELS[op_kind],
                op_attrs,
                operands,
                in_place,
                _reduced_from(op_kind, op_attrs),
            )
        )
    outside_slots = [i for op in region_ops for where, i in op.operands if where == "outside"]
    out_slot = planner.slot(group.ops[-1].results[0])
    label = describe_op(group.ops[-1])
    # The unfused steps (each with its own onnx.reference fallback) for what the
    # fused kernels do not cover.
    unfused = [_onnx_handler(planner, op) for op in group.ops]

    def region_axes(shape: tuple, dtype: np.dtype, env: list) -> list[int]:
        """The axes the region's ops may be split along, on a product of ``shape``."""
        rank = len(shape)
        if dtype not in _FLOATS and region_ops:
            raise _Unfusable
        for slot in outside_slots:
            other = env[slot]
            if other.ndim > rank or np.broadcast_shapes(other.shape, shape) != shape:
                raise _Unfusable
        axes = [a for a in range(rank) if shape[a] >= 2]
        for op in region_ops:
            if op.reduced_from is not None:
                start = op.reduced_from % rank
                axes = [a for a in axes if a < start]
        return axes

    def prepare(env: list) -> tuple[Any, np.ndarray, Callable | None, list[int]]:
        """(producer, output buffer, the one-pass chunk function or None, the axes the
        region may split, how many region ops the product applies itself) for this run;
        nothing is computed yet."""
        args = [env[s] for s in in_slots] + folded
        if tail is not None:
            args = args[:2]  # the bias is the ConvTail op's
        producer = _producer(kind, args, attrs, kernel)
        if tail is not None and not isinstance(producer, _Planned):
            raise _Unfusable  # a convolution Conv2dPlan does not take: the unfused steps
        # The compiled product applies the tail in its epilogue where it can; the
        # ConvTail op is then already done when the region runs.
        skip = 0
        if tail is not None:
            where, i = residual_operand
            residual = env[i] if where == "outside" else None
            if producer.plan.fuse_tail(tail.bias, residual, tail.activation, tail.alpha):
                skip = 1
        rank = len(producer.shape)
        if len(region_ops) <= skip:  # no op left to check the outside operands against
            axes = [a for a in range(rank) if producer.shape[a] >= 2]
        else:
            axes = region_axes(producer.shape, producer.dtype, env)
        out = producer.out()
        if not (producer.parts and producer.region_axis in axes):
            return producer, out, None, axes, skip
        axis = producer.region_axis
        plan = producer.plan
        if len(region_ops) <= skip and isinstance(plan, Conv2dPlan) and plan.compiled():
            # Nothing left for the region: the chunk is the compiled product's jobs.
            return producer, out, _ConvChunk(plan, out.reshape(plan.shape)), axes, skip

        def chunk(lo: int, hi: int) -> None:
            # One pass: the chunk's slice of the product, then the region on it.
            producer.chunk(out, lo, hi)
            _run_region(out, axis, lo, hi, rank, env, skip)

        return producer, out, chunk, axes, skip

    def run(env: list) -> np.ndarray:
        with parallel.serial_blas():
            producer, out, chunk, axes, skip = prepare(env)
            if chunk is not None:
                _run_split([chunk], producer.parts)
                return out
            # The product split as its kernel splits it, then the region split its way.
            producer.into(out)
            epilogue(out, axes, env, skip)
        return out

    def epilogue(out: np.ndarray, axes: list[int], env: list, skip: int = 0) -> None:
        shape, rank = out.shape, out.ndim
        if len(region_ops) > skip and axes and math.prod(shape) >= parallel.MIN_ELEMENTS:
            axis = axes[0]
            parallel.run_chunks(
                lambda lo, hi: _run_region(out, axis, lo, hi, rank, env, skip), shape[axis]
            )
        else:
            _run_region(out, None, 0, 0, rank, env, skip)

    def finish(env: list, product: np.ndarray, axes: list[int]) -> None:
        epilogue(product, axes, env)
        env[out_slot] = product

    def _run_region(out, axis, lo, hi, rank, env, skip: int = 0) -> None:
        """Region ops [skip, ...) on a chunk; the first ``skip`` (the ConvTail, when the
        product applied it) leave their result in the product's buffer."""
        if len(region_ops) <= skip:
            return
        view = out if axis is None else out[(slice(None),) * axis + (slice(lo, hi),)]
        values: list[Any] = [view] * (1 + skip) + [None] * (len(region_ops) - skip)
        owned = [True] * (1 + skip) + [False] * (len(region_ops) - skip)
        for k, op in enumerate(region_ops[skip:], 1 + skip):
            inputs: list[Any] = []
            for where, i in op.operands:
                if where == "region":
                    inputs.append(values[i])
                elif where in ("outside", "fixed"):
                    other = env[i] if where == "outside" else fixed[i]
                    inputs.append(
                        other if axis is None else _slice_outside(other, rank, axis, lo, hi)
                    )
                else:
                    inputs.append(None)
            target = op.operands[op.in_place][1] if op.in_place >= 0 else -1
            if target >= 0 and owned[target] and _in_place_ok(op, inputs):
                y = inputs[op.in_place]
                over_input = _OVER_INPUT.get(op.kind)
                if over_input is None:
                    with np.errstate(all="ignore"):
                        _IN_PLACE[op.kind](inputs[0], inputs[1], out=y)
                    done = True
                else:
                    done = over_input(inputs, op.attrs)
                if done:
                    values[k] = y
                    owned[k] = True
                    continue
            y = op.kernel(inputs, op.attrs, 1)[0]
            values[k] = y
            owned[k] = y.flags.writeable and not any(
                isinstance(a, np.ndarray) and np.may_share_memory(y, a) for a in inputs
            )
        last = values[-1]
        if last is not view:
            if last.shape != view.shape or last.dtype != view.dtype:
                raise _Unfusable
            view[...] = last

    def run_into(env: list) -> None:
        env[out_slot] = run(env)

    return _Region(
        _guarded(run_into, unfused, label), prepare, out_slot, region_axes, finish, in_slots[0]
    )


def _chain_step(regions: list[_Region], label: str) -> Callable:
    """Regions chained by rows (see ``find_chains``): one split over the output rows,
    each chunk running every region's chunk in turn, so a region reads the rows the
    same thread just wrote.  Each region's chunk is the call its own step would make,
    at the same row bounds: bit-identical to running the regions one by one, which is
    what happens when a run-time shape does not allow the chain."""

    # Input shapes the chain was found not to cover (ResNet's 7x7 layers split by
    # channels): their runs go straight to the regions one by one, rather than planning
    # the first regions again each run before finding out.
    declined: set[tuple] = set()
    first_input = regions[0].in_slot

    def run(env: list) -> None:
        x = env[first_input]
        # (what the regions' splits depend on besides the shapes, which follow from it)
        key = (np.shape(x), getattr(x, "dtype", None), parallel.WORKERS, parallel.MIN_FLOPS)
        if key in declined:
            raise _Unfusable
        try:
            _run_chain(env)
        except _Unfusable:
            declined.add(key)
            raise

    def _run_chain(env: list) -> None:
        with parallel.serial_blas():
            chunks = []
            parts = None
            for region in regions:
                producer, out, chunk, _, _ = region.prepare(env)
                plan = getattr(producer, "plan", None)
                if chunk is None or not isinstance(plan, Conv2dPlan) or plan.axis != 2:
                    raise _Unfusable
                if parts is not None and producer.parts != parts:
                    raise _Unfusable
                parts = producer.parts
                # The next region's plan keeps a reference to this buffer and reads
                # each chunk's rows after this region's chunk has written them.
                env[region.out_slot] = out
                chunks.append(chunk)

            _run_split(chunks, parts)

    return _guarded(run, [region.step for region in regions], label)


class _ConvChunk:
    """A region's chunk that is only its compiled convolution: a split of such chunks
    runs wholly in the extension's threads (``native.run_parts``), with no Python thread
    to wake and no GIL to pass."""

    def __init__(self, plan: Conv2dPlan, out: np.ndarray):
        self.plan, self.out = plan, out

    def __call__(self, lo: int, hi: int) -> None:
        self.plan.chunk(self.out, lo, hi)

    def jobs(self, lo: int, hi: int) -> list[tuple]:
        return self.plan.jobs(self.out, lo, hi)


def _run_split(chunks: list[Callable], n: int) -> None:
    """Each of ``chunks`` in turn over each range of ``parallel.chunk_bounds(n)``, the
    ranges side by side (one call of ``parallel.run_chunks``'s kind)."""
    if all(isinstance(chunk, _ConvChunk) for chunk in chunks):
        bounds = parallel.chunk_bounds(n)
        native.run_parts([[job for c in chunks for job in c.jobs(lo, hi)] for lo, hi in bounds])
        return

    def chunk_all(lo: int, hi: int) -> None:
        for chunk in chunks:
            chunk(lo, hi)

    parallel.run_chunks(chunk_all, n)


def _stack_chain_step(planner: Any, region: _Region, reader: Operation) -> Callable:
    """The region, then ``reader`` (a MatMul of its result), in one split over their
    stacked matrices (see ``find_stack_chains``); the two steps one by one where the
    run-time plans do not split alike."""
    other_slot = planner.slot(reader.onnx_inputs()[1])  # type: ignore[attr-defined]
    out_slot = planner.slot(reader.results[0])
    unfused = _onnx_handler(planner, reader)

    def run(env: list) -> None:
        with parallel.serial_blas():
            producer, out, chunk, _, _ = region.prepare(env)
            first = getattr(producer, "plan", None)
            other = env[other_slot]
            if (
                chunk is None
                or getattr(first, "scheme", None) != "stack"
                or other.dtype != out.dtype
                or other.ndim < 2
            ):
                raise _Unfusable
            plan, shape = matmul_plan(out, other)
            # The second product must read the region's buffer itself (matmul_plan
            # copies operands BLAS cannot take), and split its matrices the same way.
            if (
                shape is None
                or plan.scheme != "stack"
                or plan.parts != producer.parts
                or not np.may_share_memory(plan.a3, out)
            ):
                raise _Unfusable
            result = np.empty(plan.shape, dtype=plan.dtype)

            def chunk_both(lo: int, hi: int) -> None:
                chunk(lo, hi)
                plan.chunk(result, lo, hi)

            parallel.run_chunks(chunk_both, producer.parts)
        env[region.out_slot] = out
        env[out_slot] = result.reshape(shape)

    return _guarded(run, [region.step, unfused], describe_op(reader))


def _reduction_chain_step(first: _Region, second: _Region, second_producer: Operation) -> Callable:
    """Two regions in one split (see ``find_reduction_chains``): each chunk computes the
    first region's columns [lo, hi), then their product by rows [lo, hi) of the second
    weight, a partial sum of the second product over that slice of its inner dimension.
    After the join the partials are added in chunk order and the second region's ops
    run on the sum.  This reassociates the second product's sum (a few float32 ulp,
    bounded by the tests); where the first region does not split by columns, the two
    regions run one by one."""
    weight = _constant(second_producer.onnx_inputs()[1])  # type: ignore[attr-defined]
    assert weight is not None

    def run(env: list) -> None:
        with parallel.serial_blas():
            producer, out, chunk, _, _ = first.prepare(env)
            plan = getattr(producer, "plan", None)
            if (
                chunk is None
                or getattr(plan, "scheme", None) != "cols"
                or out.dtype != weight.dtype
                or out.shape[-1] != weight.shape[0]
            ):
                raise _Unfusable
            activation = out.reshape(-1, out.shape[-1])
            shape = (*out.shape[:-1], weight.shape[1])
            axes = second.axes(shape, out.dtype, env)  # before any work: may raise
            partials: dict[int, np.ndarray] = {}

            def chunk_then_partial(lo: int, hi: int) -> None:
                chunk(lo, hi)
                partials[lo] = np.matmul(activation[:, lo:hi], weight[lo:hi])

            parallel.run_chunks(chunk_then_partial, producer.parts)
            starts = sorted(partials)
            total = partials[starts[0]]
            for lo in starts[1:]:
                total += partials[lo]
        env[first.out_slot] = out
        second.finish(env, total.reshape(shape), axes)

    return _guarded(run, [first.step, second.step], describe_op(second_producer))


def _siblings_step(planner: Any, siblings: Siblings, members: list[Operation]) -> Callable:
    x_slot = planner.slot(siblings.matmuls[0].onnx_inputs()[0])  # type: ignore[attr-defined]
    out_slots = [planner.slot(v) for v in siblings.outputs]
    offsets = np.cumsum([0, *siblings.widths]).tolist()
    weight, bias = siblings.weight, siblings.bias
    label = describe_op(members[0])
    unfused = [_onnx_handler(planner, op) for op in members]

    def run(env: list) -> None:
        x = env[x_slot]
        if x.dtype != weight.dtype or x.ndim < 2 or x.shape[-1] != weight.shape[0]:
            raise _Unfusable
        with parallel.serial_blas():
            plan, shape = matmul_plan(x, weight)
            if shape is None:
                raise _Unfusable
            out = np.empty(plan.shape, dtype=plan.dtype)
            if plan.parts and plan.scheme == "cols" and bias is not None:

                def chunk(lo: int, hi: int) -> None:
                    plan.chunk(out, lo, hi)
                    out[:, lo:hi] += bias[lo:hi]

                parallel.run_chunks(chunk, plan.parts)
            else:
                plan.into(out)
                if bias is not None:
                    out += bias
        y = out.reshape(shape)
        for slot, lo, hi in zip(out_slots, offsets[:-1], offsets[1:], strict=True):
            env[slot] = y[..., lo:hi]

    return _guarded(run, unfused, label)


def _in_place_ok(op: _RegionOp, inputs: list) -> bool:
    """The ufunc may write into the operand it overwrites: both floats of one type, and
    the other operand broadcasts into it."""
    y = inputs[op.in_place]
    if not isinstance(y, np.ndarray) or y.dtype.kind != "f" or not y.flags.writeable:
        return False
    if op.kind in _OVER_INPUT:
        return True
    other = inputs[1 - op.in_place]
    return (
        isinstance(other, np.ndarray)
        and other.dtype == y.dtype
        and other.ndim <= y.ndim
        and np.broadcast_shapes(y.shape, other.shape) == y.shape
    )
