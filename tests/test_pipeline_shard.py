"""pipeline-shard, nc-place-weights and nc-estimate: the cut is the exact min-max split
for its order (hypothesis against brute force, on random cost chains and on random
DAG programs), ``cores=auto`` is minimal, placement fills the budget exactly, sharded
programs compute bit for bit what one core computes, and the streaming timeline
overlaps requests across cores."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from conftest import run_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context

import neuron_ir
from dialects import nc
from neuron_ir import zoo
from neuron_ir.errors import CompileError, NeuronIRError, PassError
from neuron_ir.target.cost import core_dram_bandwidth, stage_costs
from neuron_ir.target.profiles import TARGETS
from passes.estimate import EstimatePass
from passes.pipeline_shard import (
    ChainModel,
    chain_model,
    fewest_fitting_stages,
    fits,
    min_max_split,
    segment_cost,
)
from passes.place_weights import PlaceWeightsPass

INF1, INF2 = TARGETS["inf1"], TARGETS["inf2"]


def _splits(n: int, k: int):
    for inner in itertools.combinations(range(1, n), k - 1):
        yield [0, *inner, n]


def _brute(model: ChainModel, k: int, fit_only: bool = False) -> float:
    best = math.inf
    for cuts in _splits(model.n, k):
        if fit_only and not all(fits(model, cuts[s], cuts[s + 1]) for s in range(k)):
            continue
        best = min(best, max(segment_cost(model, s, cuts[s], cuts[s + 1]) for s in range(k)))
    return best


@st.composite
def _chains(draw) -> ChainModel:
    n = draw(st.integers(1, 8))
    profile = draw(st.sampled_from([INF1, INF2]))
    budget = profile.sbuf_weight_bytes
    times = [draw(st.floats(1e-7, 1e-3)) for _ in range(n)]
    nweights = draw(st.integers(0, 5))
    sizes = [int(draw(st.floats(0.0, 0.7)) * budget) + 1 for _ in range(nweights)]
    uses = []
    for _ in range(n):
        ws = (
            draw(st.lists(st.integers(0, nweights - 1), max_size=2, unique=True))
            if nweights
            else []
        )
        uses.append([(w, sizes[w]) for w in ws])
    cross_b = [0.0] + [draw(st.sampled_from([0.0, 1e3, 4e5, 3e6])) for _ in range(n - 1)] + [0.0]
    cross_c = [0 if b == 0 else draw(st.integers(1, 3)) for b in cross_b]
    live = [draw(st.floats(0.0, 1.5 * profile.sbuf_bytes)) for _ in range(n)]
    traffic = [draw(st.floats(0.0, 1e7)) for _ in range(n)]
    return ChainModel(times, uses, cross_b, cross_c, float(budget), profile, [], traffic, live)


@settings(max_examples=300, deadline=None)
@given(_chains(), st.data())
def test_min_max_split_equals_brute_force_on_random_chains(model, data):
    cores = data.draw(st.integers(1, model.n))
    cuts, best = min_max_split(model, cores)
    assert cuts[0] == 0 and cuts[-1] == model.n and len(cuts) == cores + 1
    assert all(a < b for a, b in zip(cuts, cuts[1:], strict=False))
    achieved = max(segment_cost(model, s, cuts[s], cuts[s + 1]) for s in range(cores))
    assert achieved == pytest.approx(best, rel=1e-9)
    assert best == pytest.approx(_brute(model, cores), rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(_chains(), st.data())
def test_min_max_split_under_the_memory_bound_equals_brute_force(model, data):
    cores = data.draw(st.integers(1, model.n))
    cuts, best = min_max_split(model, cores, fit_only=True)
    brute = _brute(model, cores, fit_only=True)
    if math.isinf(brute):
        assert math.isinf(best)
        return
    assert best == pytest.approx(brute, rel=1e-9)
    assert all(fits(model, cuts[s], cuts[s + 1]) for s in range(cores))


@settings(max_examples=300, deadline=None)
@given(_chains())
def test_auto_is_the_fewest_stages_that_fit(model):
    if any(not fits(model, p, p + 1) for p in range(model.n)):
        with pytest.raises(PassError, match="SBUF weight budget"):
            fewest_fitting_stages(model)
        return
    cuts = fewest_fitting_stages(model)
    k = len(cuts) - 1
    assert all(fits(model, cuts[s], cuts[s + 1]) for s in range(k))
    if k > 1:  # no split into fewer stages fits
        assert not any(
            all(fits(model, c[s], c[s + 1]) for s in range(k - 1)) for c in _splits(model.n, k - 1)
        )


# -- random DAG programs ----------------------------------------------------------


@st.composite
def _dags(draw):
    d = draw(st.sampled_from([8, 64, 512]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values, nodes, inits = ["x"], [], []
    for k in range(draw(st.integers(2, 7))):
        kind = draw(st.sampled_from(["MatMul", "Add", "Mul", "Tanh"]))
        a = draw(st.sampled_from(values))
        out = f"v{k}"
        if kind == "MatMul":
            inits.append(
                numpy_helper.from_array(
                    (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32), f"w{k}"
                )
            )
            nodes.append(helper.make_node("MatMul", [a, f"w{k}"], [out]))
        elif kind == "Tanh":
            nodes.append(helper.make_node("Tanh", [a], [out]))
        else:
            nodes.append(helper.make_node(kind, [a, draw(st.sampled_from(values))], [out]))
        values.append(out)
    # Every value still unused feeds the output, so nothing is dead.
    used = {i for n in nodes for i in n.input}
    tail = [v for v in values[1:] if v not in used] or [values[-1]]
    acc = tail[0]
    for k, v in enumerate(tail[1:]):
        nodes.append(helper.make_node("Add", [acc, v], [f"s{k}"]))
        acc = f"s{k}"
    nodes.append(helper.make_node("Identity", [acc], ["y"]))
    graph = helper.make_graph(
        nodes,
        "dag",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, d])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d


def _program(module) -> nc.ProgramOp:
    (program,) = [op for op in module.walk() if isinstance(op, nc.ProgramOp)]
    return program


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_dags(), st.sampled_from(["inf1", "inf2"]), st.data())
def test_random_dag_programs_cut_optimally_and_match_one_core(dag, target, data):
    model, d = dag
    feeds = {"x": np.random.default_rng(0).standard_normal((2, d)).astype(np.float32)}
    one = neuron_ir.compile(model, target)
    chain, _ = chain_model(_program(one.module).clone())
    cores = data.draw(st.integers(2, min(4, chain.n)), label="cores") if chain.n > 1 else 1
    _, best = min_max_split(chain, cores)
    assert best == pytest.approx(_brute(chain, cores), rel=1e-9)
    sharded = neuron_ir.compile(model, target, cores=cores)
    assert sharded.cores == cores
    expect, got = one.run(feeds), sharded.run(feeds)
    for name in expect:
        assert np.array_equal(expect[name], got[name]), name
    # The estimates price the cut as the DP did (same ops, transfers, no overflow).
    report = sharded.stage_report()
    assert report.bottleneck == pytest.approx(best, rel=1e-6)


# -- whole models -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cores"), [("tiny_bert", 3), ("tiny_resnet", 2), ("tiny_dlrm", 2), ("tiny_yolo", 3)]
)
def test_sharded_zoo_models_are_bit_identical_to_one_core(name, cores):
    feeds = zoo.example_inputs(name)
    shapes = {k: v.shape for k, v in feeds.items()}
    source = zoo.build(name)
    before = neuron_ir.run(neuron_ir.import_model(source), feeds)
    one = neuron_ir.compile(source, "inf2", input_shapes=shapes)
    many = neuron_ir.compile(source, "inf2", input_shapes=shapes, cores=cores)
    many.module.verify()
    expect, got = one.run(feeds), many.run(feeds)
    assert expect.keys() == got.keys() == before.keys()
    for key in expect:
        assert np.array_equal(expect[key], got[key]), key
    programs = [op for op in many.module.walk() if isinstance(op, nc.ProgramOp)]
    assert all(p.cores.value.data == cores for p in programs)
    # Every op of every stage is placed and priced.
    for p in programs:
        for op in p.walk():
            if isinstance(op, nc.NcOp) and op.operands:
                assert op.est_time is not None and op.reads is not None, op.name


def test_auto_caches_every_whole_read_weight_and_one_core_fewer_cannot():
    # Eight 1024x1024 matmuls: 2 MiB each in bf16, three fit inf1's 6 MiB budget.
    rng = np.random.default_rng(1)
    nodes, inits, cur = [], [], "x"
    for k in range(8):
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal((1024, 1024)) * 0.03).astype(np.float32), f"w{k}"
            )
        )
        nodes.append(helper.make_node("MatMul", [cur, f"w{k}"], [f"m{k}"]))
        nodes.append(helper.make_node("Tanh", [f"m{k}"], [f"t{k}"]))
        cur = f"t{k}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 1024])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    auto = neuron_ir.compile(model, "inf1", cores="auto")
    assert auto.cores == 3  # ceil(8 / 3)
    program = _program(auto.module)
    weights = [op for op in program.walk() if isinstance(op, nc.WeightOp)]
    assert len(weights) == 8 and all(w.memory.data == "sbuf" for w in weights)
    for cost in stage_costs(program, INF1):
        assert sum(w.nbytes for w in cost.weights) <= INF1.sbuf_weight_bytes
    two = neuron_ir.compile(model, "inf1", cores=2)
    assert any(op.memory.data == "hbm" for op in two.module.walk() if isinstance(op, nc.WeightOp))
    feeds = {"x": rng.standard_normal((1, 1024)).astype(np.float32)}
    one = neuron_ir.compile(model, "inf1")
    assert np.array_equal(one.run(feeds)[cur], auto.run(feeds)[cur])
    assert auto.simulated_throughput > 2 * one.simulated_throughput


def test_core_limits_and_bad_options_are_clear_errors():
    model = zoo.build("tiny_resnet")
    shapes = {k: v.shape for k, v in zoo.example_inputs("tiny_resnet").items()}
    with pytest.raises(PassError, match="cores=25 but inf2 has at most 24 NeuronCores"):
        neuron_ir.compile(model, "inf2", input_shapes=shapes, cores=25)
    with pytest.raises(CompileError, match="cores must be a positive integer or 'auto'"):
        neuron_ir.compile(model, "inf2", input_shapes=shapes, cores=0)
    with pytest.raises(CompileError, match="replicas must be a positive integer"):
        neuron_ir.compile(model, "inf2", input_shapes=shapes, replicas=0)
    with pytest.raises(CompileError, match=r"need 26 NeuronCores but inf2 has at most 24"):
        neuron_ir.compile(model, "inf2", input_shapes=shapes, cores=2, replicas=13)
    assert issubclass(CompileError, NeuronIRError)


# -- placement and estimates ----------------------------------------------------------


def _mlp_program(sizes: list[int], target: str) -> str:
    """A one-stage program of matmuls [1, d_k] x [d_k, d_k+1] with splat weights."""
    lines = [
        f"func.func private @neuron_subgraph_0(%x : tensor<1x{sizes[0]}xf32>) -> "
        f'tensor<1x{sizes[-1]}xf32> attributes {{neuron.target = "{target}"}} {{',
        f'  %r = nc.program(%x) attributes {{target = "{target}", batch = 1 : i64, '
        f"cores = 1 : i64}} : (tensor<1x{sizes[0]}xf32>) -> tensor<1x{sizes[-1]}xf32> {{",
        f"  ^bb0(%a0: tensor<1x{sizes[0]}xf32>):",
    ]
    for k, (m, n) in enumerate(zip(sizes, sizes[1:], strict=False)):
        lines.append(
            f"    %w{k} = nc.weight {{value = dense<0.01> : tensor<{m}x{n}xf32>, "
            f'memory = "hbm"}} : tensor<{m}x{n}xf32>'
        )
        lines.append(
            f"    %a{k + 1} = nc.matmul %a{k}, %w{k} : tensor<1x{m}xf32>, "
            f"tensor<{m}x{n}xf32> -> tensor<1x{n}xf32>"
        )
    last = len(sizes) - 1
    lines += [
        f"    nc.return %a{last} : tensor<1x{sizes[-1]}xf32>",
        "  }",
        f"  func.return %r : tensor<1x{sizes[-1]}xf32>",
        "}",
    ]
    return "\n".join(lines)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.sampled_from([256, 512, 1024, 2048, 3072]), min_size=2, max_size=6),
    st.sampled_from(["inf1", "inf2"]),
    st.booleans(),
)
def test_placement_fills_the_budget_exactly_and_estimates_charge_hbm(sizes, target, autocast):
    profile = TARGETS[target]
    module = neuron_ir.parse_ir(_mlp_program(sizes, target))
    PlaceWeightsPass(autocast=autocast).apply(Context(), module)
    EstimatePass(autocast=autocast).apply(Context(), module)
    module.verify()
    itemsize = 2 if autocast else 4
    weights = [op for op in module.walk() if isinstance(op, nc.WeightOp)]
    stored = [math.prod(w.output.type.get_shape()) * itemsize for w in weights]
    cached = sum(b for w, b in zip(weights, stored, strict=True) if w.memory.data == "sbuf")
    free = profile.sbuf_weight_bytes - cached
    assert cached <= profile.sbuf_weight_bytes
    for w, b in zip(weights, stored, strict=True):
        if w.memory.data == "hbm":
            assert b > free  # nothing left in HBM would have fitted
    for op in module.walk():
        if not isinstance(op, nc.MatmulOp):
            continue
        m, n = op.rhs.type.get_shape()
        compute = 2.0 * m * n / profile.peak_flops["bf16"]
        hbm = m * n * itemsize if op.rhs.owner.memory.data == "hbm" else 0
        assert [r.data for r in op.reads.data] == ["sbuf", "hbm" if hbm else "sbuf"]
        expect = max(compute, hbm / core_dram_bandwidth(profile)) + profile.dispatch_overhead_s
        assert op.est_time.value.data == pytest.approx(expect, rel=1e-12)


def test_gathered_tables_pay_for_rows_and_batch_amortises_weights():
    from neuron_ir.target.cost import largest_unspilled_batch, price_program, spill_fraction

    feeds = zoo.example_inputs("tiny_bert", batch=1, seq=16)
    model = neuron_ir.compile(
        zoo.build("tiny_bert"), "inf1", input_shapes={k: v.shape for k, v in feeds.items()}
    )
    program = _program(model.module)
    (stage,) = stage_costs(program, INF1)
    tables = [k for k, w in enumerate(stage.weights) if w.gather_only]
    assert tables and all(stage.weights[k].memory == "hbm" for k in tables)
    word = max(tables, key=lambda k: stage.weights[k].nbytes)
    for op in stage.ops:
        for k, nbytes in op.gathered:
            if k == word:  # 16 rows of the vocabulary, not the table
                assert nbytes < stage.weights[k].nbytes / 10
    price = price_program([stage], INF1, 1)
    assert price.stages[0].gather_bytes <= sum(stage.weights[k].nbytes for k in tables)
    # Force every whole-read weight into HBM: traffic per inference falls as 1/N.
    hbm = type(stage)(
        stage.ops,
        tuple(type(w)(w.nbytes, "hbm", w.gather_only) for w in stage.weights),
        stage.peak_activation,
    )
    per = [price_program([hbm], INF1, 1, n).stages[0].hbm_weight_bytes / n for n in (1, 2, 4)]
    assert per[0] == pytest.approx(2 * per[1]) == pytest.approx(4 * per[2])
    p1, p4 = price_program([hbm], INF1, 1, 1), price_program([hbm], INF1, 1, 4)
    assert p4.throughput() > p1.throughput()
    # The knee: the largest batch whose working set fits, and spilling right after it.
    knee = largest_unspilled_batch(stage, INF1, 1)
    assert knee >= 1
    assert spill_fraction(stage, INF1, knee) == 0.0 < spill_fraction(stage, INF1, knee + 1)


# -- streaming ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_stage_bert():
    feeds = zoo.example_inputs("tiny_bert")
    model = neuron_ir.compile(
        zoo.build("tiny_bert"), "inf1", input_shapes={k: v.shape for k, v in feeds.items()}, cores=4
    )
    return model, feeds


def test_stream_of_requests_overlaps_across_cores(four_stage_bert):
    model, _ = four_stage_bert
    timeline = model.timeline(requests=8)
    events = [e for e in timeline.events if e.track != "cpu"]
    assert {e.core for e in events} == {0, 1, 2, 3}

    def span(core, request):
        evs = [e for e in events if e.core == core and e.request == request]
        return min(e.start for e in evs), max(e.start + e.duration for e in evs)

    # Stage 1 serves request 0 while stage 0 serves request 1.
    a0, a1 = span(1, 0)
    b0, b1 = span(0, 1)
    assert a0 < b1 and b0 < a1
    # Per core, events never overlap; request i+1 starts a stage after request i.
    for core in range(4):
        evs = sorted((e for e in events if e.core == core), key=lambda e: e.start)
        for x, y in zip(evs, evs[1:], strict=False):
            assert x.start + x.duration <= y.start + 1e-12
    report = model.stage_report()
    assert timeline.bottleneck == pytest.approx(report.bottleneck, rel=1e-9)
    assert model.simulated_throughput == pytest.approx(1.0 / report.bottleneck, rel=1e-9)
    assert model.simulated_latency == pytest.approx(report.total, rel=1e-9)
    # In steady state one request leaves every bottleneck seconds.
    assert timeline.makespan == pytest.approx(report.total + 7 * report.bottleneck, rel=1e-6)
    trace = timeline.to_chrome_trace()
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert {f"NeuronCore {k}" for k in range(4)} <= names


def test_replicas_scale_throughput_not_latency(four_stage_bert):
    model, _ = four_stage_bert
    feeds = zoo.example_inputs("tiny_bert")
    shapes = {k: v.shape for k, v in feeds.items()}
    twice = neuron_ir.compile(
        zoo.build("tiny_bert"), "inf1", input_shapes=shapes, cores=4, replicas=2
    )
    assert twice.simulated_throughput == pytest.approx(2 * model.simulated_throughput)
    assert twice.simulated_latency == pytest.approx(model.simulated_latency)
    text = twice.stage_report().text()
    assert "4 core(s) x 2 replica(s)" in text and "bottleneck" in text and "ratio" in text


def test_neuron_run_traces_a_stream(tmp_path):
    import onnx

    feeds = zoo.example_inputs("tiny_bert")
    src, inputs, trace = tmp_path / "m.onnx", tmp_path / "x.npz", tmp_path / "t.json"
    onnx.save(zoo.build("tiny_bert"), src)
    np.savez(inputs, **feeds)
    proc = run_tool(
        "neuron_ir.cli.run",
        str(src),
        "--inputs",
        str(inputs),
        "--cores",
        "4",
        "--requests",
        "8",
        "--trace",
        str(trace),
    )
    assert proc.returncode == 0, proc.stderr
    assert "8 requests done after" in proc.stdout and "4 core(s)" in proc.stdout
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert {e["args"]["request"] for e in events} == set(range(8))
    assert len({e["pid"] for e in events}) >= 4
    bad = run_tool("neuron_ir.cli.run", str(src), "--inputs", str(inputs), "--cores", "x")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --cores")
    assert "Traceback" not in bad.stderr


def test_price_at_another_batch_without_recompiling(four_stage_bert):
    model, _ = four_stage_bert
    (same,) = model.price()
    report = model.stage_report()
    assert [s.time for s in same.stages] == pytest.approx([r.time for r in report.rows])
    (four,) = model.price(batch=4)
    assert four.batch == 4 and len(four.stages) == 4
    # Activation work scales with the batch: a stage takes longer, but less per inference.
    for one, many in zip(same.stages, four.stages, strict=True):
        assert one.time < many.time < 4 * one.time
    assert four.throughput() > same.throughput()
    with pytest.raises(CompileError, match="batch must be a positive integer"):
        model.price(batch=0)
