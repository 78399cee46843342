"""``partition``: outline NeuronCore-supported clusters into ``@neuron_subgraph_K``.

Per block (and, inside control flow that stays on the CPU, per region block):

1. Every non-constant op is supported or not (``neuron_ir.target.legality``).
2. Supported ops are grouped by their *CPU depth*, the largest number of unsupported
   ops on any path from the block's inputs to them. A group of one depth is convex
   (a path leaving it through an unsupported op arrives at a greater depth), and
   the groups form a DAG with the unsupported ops. Groups are then merged pairwise,
   in a fixed order, whenever no path joins them through another node: the result
   is acyclic, maximal (no two clusters can merge without a cycle) and
   deterministic.
3. Clusters below ``min-subgraph-size`` stay on the CPU.
4. Each cluster becomes ``func.func @neuron_subgraph_K`` (``neuron.target``), with
   the constants it reads copied in (weights live with the NeuronCore program),
   called from where the cluster was. CPU ops get a ``neuron.cpu_reason``.
"""

from __future__ import annotations

import heapq
import itertools
import sys
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, SymbolRefAttr, UnitAttr
from xdsl.dialects.func import CallOp, FuncOp, ReturnOp
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.traits import ConstantLike, IsTerminator
from xdsl.transforms.dead_code_elimination import region_dce

from neuron_ir.analysis.report import PARTITIONED_ATTR, REASON_ATTR, TARGET_ATTR
from neuron_ir.errors import PassError
from neuron_ir.ir.util import used_values


@dataclass(frozen=True)
class PartitionPass(ModulePass):
    """Outline NeuronCore-supported clusters; everything else stays on the CPU."""

    name = "partition"

    target: str = "inf1"
    """Target profile whose support table decides placement (inf1, inf2)."""
    min_subgraph_size: int = 1
    """Clusters with fewer ops than this stay on the CPU."""
    report: bool = False
    """Print the placement report to stderr."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from neuron_ir.target.legality import TARGETS

        if self.target not in TARGETS:
            raise PassError(f"unknown target '{self.target}' (targets: {', '.join(TARGETS)})")
        if PARTITIONED_ATTR in op.attributes or any(
            isinstance(f, FuncOp) and f.attributes.get(TARGET_ATTR) for f in op.ops
        ):
            raise PassError("the module is already partitioned")
        main = next(
            (f for f in op.ops if isinstance(f, FuncOp) and f.sym_name.data == "main"), None
        )
        if main is None:
            raise PassError("partition needs a func.func @main")
        state = _State(self.target, max(self.min_subgraph_size, 1), op)
        state.partition_block(main.body.block)
        op.attributes[PARTITIONED_ATTR] = UnitAttr()
        if self.report:
            from neuron_ir.analysis.report import partition_report

            sys.stderr.write(partition_report(op).text())


class _State:
    def __init__(self, target: str, min_size: int, module: ModuleOp):
        self.target = target
        self.min_size = min_size
        self.module = module
        self.counter = itertools.count()

    def reason(self, op: Operation) -> str | None:
        from neuron_ir.target.legality import unsupported_reason

        return unsupported_reason(op, self.target)

    def partition_block(self, block: Block) -> None:
        ops = [o for o in block.ops if not o.has_trait(IsTerminator)]
        nodes = [o for o in ops if not o.has_trait(ConstantLike)]
        # Inner regions first: their ops are partitioned where the region allows.
        for node in nodes:
            for region in node.regions:
                for inner in region.blocks:
                    self.partition_block(inner)
        reasons = {node: (None if node.regions else self.reason(node)) for node in nodes}
        for node in nodes:
            if node.regions:
                reasons[node] = self.reason(node) or "control flow runs on the CPU"
        clusters = _clusters(nodes, reasons)
        for cluster in clusters:
            if len(cluster) < self.min_size:
                for node in cluster:
                    reasons[node] = (
                        f"in a cluster of {len(cluster)} op(s), below "
                        f"min-subgraph-size={self.min_size}"
                    )
        for node, why in reasons.items():
            if why is not None:
                node.attributes[REASON_ATTR] = StringAttr(why)
        kept = [c for c in clusters if len(c) >= self.min_size]
        for cluster in kept:
            self.outline(block, cluster)
        if kept:
            _reorder(block)
            # Constants copied into the subgraphs may be dead in the caller now.
            region_dce(block.parent)

    def outline(self, block: Block, cluster: list[Operation]) -> None:
        members = set(cluster)
        inputs: list[SSAValue] = []
        constants: dict[Operation, None] = {}  # ordered set: list lookups were quadratic
        for node in cluster:
            for value in used_values(node):
                owner = value.owner
                if isinstance(owner, Operation) and owner in members:
                    continue
                if isinstance(owner, Operation) and owner.has_trait(ConstantLike):
                    constants[owner] = None
                    continue
                if value not in inputs:
                    inputs.append(value)
        outputs: list[SSAValue] = []
        for node in cluster:
            for result in node.results:
                if any(_user_outside(use.operation, members) for use in result.uses):
                    outputs.append(result)
        name = f"neuron_subgraph_{next(self.counter)}"
        body = Block(arg_types=[v.type for v in inputs])
        mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, body.args, strict=True))
        for value, arg in zip(inputs, body.args, strict=True):
            if value.name_hint:
                arg.name_hint = value.name_hint
        # One index of the block, not get_operation_index (a walk) per constant.
        position = {op: i for i, op in enumerate(block.ops)}
        for const in sorted(
            constants, key=lambda op: position[op] if op in position else _position(op)
        ):
            body.add_op(const.clone(value_mapper=mapping))
        for node in cluster:
            clone = node.clone(value_mapper=mapping)
            clone.attributes.pop(REASON_ATTR, None)
            body.add_op(clone)
        body.add_op(ReturnOp(*[mapping[v] for v in outputs]))
        func = FuncOp(
            name, ([v.type for v in inputs], [v.type for v in outputs]), Region(body), "private"
        )
        func.attributes[TARGET_ATTR] = StringAttr(self.target)
        self.module.body.block.add_op(func)
        call = CallOp(SymbolRefAttr(name), inputs, [v.type for v in outputs])
        block.insert_op_before(call, cluster[0])
        for old, new in zip(outputs, call.results, strict=True):
            if old.name_hint:
                new.name_hint = old.name_hint
            old.replace_all_uses_with(new)
        for node in reversed(cluster):
            node.detach()
            node.erase()


def _position(op: Operation) -> int:
    block = op.parent_block()
    return 0 if block is None else block.get_operation_index(op)


def _user_outside(user: Operation, members: set[Operation]) -> bool:
    while user is not None:
        if user in members:
            return False
        user = user.parent_op()
    return True


def _owner_in(value: SSAValue, index: dict[Operation, int]) -> int | None:
    owner = value.owner
    if isinstance(owner, Operation):
        while owner is not None and owner not in index:
            owner = owner.parent_op()
        if owner is not None:
            return index[owner]
    return None


def _clusters(
    nodes: list[Operation], reasons: dict[Operation, str | None]
) -> list[list[Operation]]:
    """Maximal acyclic clusters of the supported nodes, in block order."""
    index = {node: k for k, node in enumerate(nodes)}
    preds: list[set[int]] = [set() for _ in nodes]
    for k, node in enumerate(nodes):
        for value in used_values(node):
            p = _owner_in(value, index)
            if p is not None and p != k:
                preds[k].add(p)
    supported = [reasons[n] is None for n in nodes]
    depth = [0] * len(nodes)
    for k in range(len(nodes)):  # block order is a topological order
        depth[k] = max((depth[p] + (0 if supported[p] else 1) for p in preds[k]), default=0)
    # Contracted graph: one node per depth group, one per unsupported op.
    group_of: dict[int, int] = {}
    members: list[list[int]] = []
    is_cluster: list[bool] = []
    node_group = [0] * len(nodes)
    for k in range(len(nodes)):
        if supported[k]:
            if depth[k] not in group_of:
                group_of[depth[k]] = len(members)
                members.append([])
                is_cluster.append(True)
            g = group_of[depth[k]]
        else:
            g = len(members)
            members.append([])
            is_cluster.append(False)
        members[g].append(k)
        node_group[k] = g
    alive = [True] * len(members)

    def successors() -> list[set[int]]:
        succ: list[set[int]] = [set() for _ in members]
        for k in range(len(nodes)):
            for p in preds[k]:
                a, b = node_group[p], node_group[k]
                if a != b:
                    succ[a].add(b)
        return succ

    succ = successors()
    reachable = _fixpoint_reach(succ, alive)
    merged = True
    while merged:
        merged = False
        clusters = sorted(
            (g for g in range(len(members)) if alive[g] and is_cluster[g]),
            key=lambda g: min(members[g]),
        )
        for a, b in itertools.combinations(clusters, 2):
            if _joined_elsewhere(a, b, succ, reachable) or _joined_elsewhere(b, a, succ, reachable):
                continue
            for k in members[b]:
                node_group[k] = a
            members[a].extend(members[b])
            members[b] = []
            alive[b] = False
            succ = successors()
            reachable = _fixpoint_reach(succ, alive)
            merged = True
            break
    result = [sorted(members[g]) for g in range(len(members)) if alive[g] and is_cluster[g]]
    result.sort(key=lambda m: m[0])
    return [[nodes[k] for k in m] for m in result]


def _fixpoint_reach(succ: list[set[int]], alive: list[bool]) -> list[int]:
    """Reachability bitsets of the (acyclic) contracted graph."""
    n = len(succ)
    out = [0] * n
    state = [0] * n
    for start in range(n):
        if not alive[start] or state[start]:
            continue
        stack = [(start, iter(succ[start]))]
        state[start] = 1
        while stack:
            g, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                bits = 0
                for s in succ[g]:
                    bits |= (1 << s) | out[s]
                out[g] = bits
                state[g] = 2
                stack.pop()
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
            elif state[nxt] == 1:
                raise PassError("internal error: the cluster graph has a cycle")
    return out


def _joined_elsewhere(a: int, b: int, succ: list[set[int]], reachable: list[int]) -> bool:
    """Whether a path leads from group ``a`` to group ``b`` through another node."""
    return any(s != b and (reachable[s] >> b) & 1 for s in succ[a])


def _reorder(block: Block) -> None:
    """Re-sort a block topologically, keeping the original order where free."""
    ops = list(block.ops)
    terminator = ops[-1] if ops and ops[-1].has_trait(IsTerminator) else None
    body = ops[:-1] if terminator is not None else ops
    index = {op: k for k, op in enumerate(body)}
    deps: list[set[int]] = [set() for _ in body]
    users: list[list[int]] = [[] for _ in body]
    for k, op in enumerate(body):
        for value in used_values(op):
            p = _owner_in(value, index)
            if p is not None and p != k and p not in deps[k]:
                deps[k].add(p)
                users[p].append(k)
    pending = [len(d) for d in deps]
    ready = [k for k in range(len(body)) if pending[k] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(body):
        raise PassError("internal error: outlining created a cycle")
    if order == list(range(len(body))):
        return
    for op in body:
        op.detach()
    for k in order:
        if terminator is not None:
            block.insert_op_before(body[k], terminator)
        else:
            block.add_op(body[k])
