"""Target profiles and the cost model: published numbers, errors and monotonicity."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuron_ir.errors import NeuronIRError
from neuron_ir.target import TargetProfile, get_target
from neuron_ir.target.cost import (
    OpWork,
    compute_time,
    dtype_bytes,
    op_time,
    transfer_time,
    weights_fit,
)
from neuron_ir.target.profiles import (
    ENGINES,
    TARGETS,
    GiB,
    MiB,
    max_cores,
    sbuf_capacity,
    total_cores,
)

INF1 = TARGETS["inf1"]
INF2 = TARGETS["inf2"]


def test_profiles_carry_the_design_numbers() -> None:
    assert INF1.core_version == "v1" and INF2.core_version == "v2"
    assert INF1.cores_per_chip == 4 and INF1.max_chips == 16
    assert INF1.peak_flops["bf16"] == INF1.peak_flops["fp16"] == 16e12
    assert INF1.dram_bytes_per_chip == 8 * GiB
    assert INF1.dram_bandwidth == 50 * GiB
    assert INF1.link_bandwidth == 32 * GiB
    assert INF2.cores_per_chip == 2 and INF2.max_chips == 12
    assert INF2.sbuf_bytes == 24 * MiB and INF2.psum_bytes == 2 * MiB
    assert INF2.partitions == 128
    assert 90e12 <= INF2.peak_flops["bf16"] <= 95e12  # "about 90" a core, 190 a chip
    assert INF2.dram_bytes_per_chip == 32 * GiB
    assert INF2.dram_bandwidth == 820 * GiB
    for p in (INF1, INF2):
        assert p.engines == ENGINES == ("tensor", "vector", "scalar", "gpsimd", "dma")
        assert set(p.engine_throughput) == {"vector", "scalar", "gpsimd"}
        assert all(v > 0 for v in p.engine_throughput.values())
        assert p.dispatch_overhead_s > 0 and p.sbuf_bytes > 0 and p.psum_bytes > 0


def test_profiles_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        INF1.sbuf_bytes = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        INF1.peak_flops["bf16"] = 1.0  # type: ignore[index]


def test_profiles_pickle_copy_and_hash() -> None:
    import copy
    import pickle

    for p in (INF1, INF2):
        assert pickle.loads(pickle.dumps(p)) == p
        assert copy.deepcopy(p) == p
        assert hash(p) == hash(dataclasses.replace(p))
    assert dataclasses.replace(INF2, matmul_autocast=None) != INF2


def test_get_target() -> None:
    assert get_target("inf1") is INF1
    assert get_target(INF2) is INF2
    with pytest.raises(ValueError, match="inf1, inf2") as info:
        get_target("inf3")
    assert isinstance(info.value, NeuronIRError)
    assert "inf3" in str(info.value)


def test_core_and_sbuf_helpers() -> None:
    assert total_cores(INF1, 4) == 16
    assert total_cores(INF2, 12) == 24
    assert max_cores(INF1) == 64
    with pytest.raises(ValueError):
        total_cores(INF1, 17)
    with pytest.raises(ValueError):
        total_cores(INF2, 0)
    assert sbuf_capacity(INF2, 3) == 72 * MiB
    with pytest.raises(ValueError):
        sbuf_capacity(INF2, 0)


def test_weights_fit() -> None:
    per_core = INF2.sbuf_weight_bytes
    assert per_core < INF2.sbuf_bytes  # a reserve is kept for activations
    assert weights_fit(per_core, INF2, 1)
    assert not weights_fit(per_core + 1, INF2, 1)
    assert weights_fit(per_core + 1, INF2, 2)
    assert weights_fit(0, INF1, 1)


def test_opwork_validates() -> None:
    with pytest.raises(ValueError, match="engine"):
        OpWork(engine="warp")
    with pytest.raises(ValueError, match="dtype"):
        OpWork(engine="tensor", dtype="fp64")
    with pytest.raises(ValueError, match="weight_location"):
        OpWork(engine="tensor", weight_location="l2")
    with pytest.raises(ValueError, match="flops"):
        OpWork(engine="tensor", flops=-1)


def test_cost_monotone_in_flops_and_bytes() -> None:
    for p in (INF1, INF2):
        small = op_time(OpWork("tensor", flops=1e9), p)
        assert op_time(OpWork("tensor", flops=2e9), p) > small
        hbm = OpWork("tensor", flops=1e6, weight_bytes=1e6, weight_location="hbm")
        assert op_time(dataclasses.replace(hbm, weight_bytes=1e8), p) > op_time(hbm, p)
        spill = OpWork("vector", elements=10, bytes_in=1e6, spills=True)
        assert op_time(dataclasses.replace(spill, bytes_in=1e8), p) > op_time(spill, p)
        assert op_time(OpWork("scalar", elements=1e8), p) > op_time(
            OpWork("scalar", elements=1e6), p
        )


def test_weights_in_hbm_cost_more_than_in_sbuf() -> None:
    for p in (INF1, INF2):
        sbuf = OpWork("tensor", flops=2 * 128 * 768 * 768, weight_bytes=768 * 768 * 2)
        hbm = dataclasses.replace(sbuf, weight_location="hbm")
        assert op_time(hbm, p) > op_time(sbuf, p)


def test_activations_only_cost_when_they_spill() -> None:
    kept = OpWork("vector", elements=1000, bytes_in=1e7, bytes_out=1e7)
    assert op_time(kept, INF2) == op_time(OpWork("vector", elements=1000), INF2)
    assert op_time(dataclasses.replace(kept, spills=True), INF2) > op_time(kept, INF2)


def test_inf2_core_beats_inf1_core() -> None:
    for engine, work in (
        ("tensor", dict(flops=2 * 128 * 768 * 768)),
        ("vector", dict(elements=768 * 128)),
        ("scalar", dict(elements=768 * 128)),
    ):
        w = OpWork(engine, **work)
        assert op_time(w, INF2) < op_time(w, INF1), engine


def test_matmul_time_is_near_flops_over_peak() -> None:
    flops = 2 * 768 * 768 * 128
    w = OpWork(
        "tensor",
        flops=flops,
        bytes_in=768 * 128 * 2,
        bytes_out=768 * 128 * 2,
        weight_bytes=768 * 768 * 2,
        dtype="bf16",
    )
    for p in (INF1, INF2):
        ideal = flops / p.peak_flops["bf16"]
        t = op_time(w, p)
        assert ideal <= t <= 10 * ideal + p.dispatch_overhead_s
        assert compute_time(w, p) == pytest.approx(ideal)


def test_fp32_matmul_is_autocast() -> None:
    for p in (INF1, INF2):
        bf16 = OpWork("tensor", flops=1e9, dtype="bf16")
        assert op_time(dataclasses.replace(bf16, dtype="fp32"), p) == op_time(bf16, p)
    native = dataclasses.replace(INF2, matmul_autocast=None)
    assert op_time(OpWork("tensor", flops=1e9, dtype="fp32"), native) > op_time(
        OpWork("tensor", flops=1e9, dtype="bf16"), native
    )
    no_fp32 = dataclasses.replace(INF1, matmul_autocast=None)
    with pytest.raises(ValueError, match="fp32"):
        op_time(OpWork("tensor", flops=1, dtype="fp32"), no_fp32)


def test_int8_is_faster_than_bf16() -> None:
    for p in (INF1, INF2):
        assert op_time(OpWork("tensor", flops=1e10, dtype="int8"), p) < op_time(
            OpWork("tensor", flops=1e10, dtype="bf16"), p
        )


def test_transfer_time_scales_linearly() -> None:
    for p in (INF1, INF2):
        for kind in ("dma", "link"):
            assert transfer_time(0, p, kind) == 0.0
            bw = p.dma_bandwidth if kind == "dma" else p.link_bandwidth
            latency = p.dma_latency_s if kind == "dma" else p.link_latency_s
            t1, t2, t4 = (transfer_time(n * 1e6, p, kind) for n in (1, 2, 4))
            # A fixed latency plus a term linear in the bytes.
            assert t1 - latency == pytest.approx(1e6 / bw, rel=1e-9)
            assert t2 - t1 == pytest.approx(1e6 / bw, rel=1e-9)
            assert t4 - t2 == pytest.approx(2 * (t2 - t1), rel=1e-9)
        # NeuronLink between chips is slower than on-chip DMA.
        assert transfer_time(1e8, p, "link") > transfer_time(1e8, p, "dma")
    with pytest.raises(ValueError):
        transfer_time(10, INF1, "pcie")
    with pytest.raises(ValueError):
        transfer_time(-1, INF1)


def test_dma_op_is_priced_as_data_movement() -> None:
    small = op_time(OpWork("dma", bytes_in=1e3, bytes_out=1e3), INF2)
    big = op_time(OpWork("dma", bytes_in=1e8, bytes_out=1e8), INF2)
    assert INF2.dispatch_overhead_s <= small < big


def test_dtype_bytes() -> None:
    assert [dtype_bytes(d) for d in ("bf16", "fp16", "fp32", "int8")] == [2, 2, 4, 1]
    with pytest.raises(ValueError):
        dtype_bytes("fp64")


def test_cost_model_is_deterministic_and_pure() -> None:
    w = OpWork("tensor", flops=1e9, weight_bytes=1e6, weight_location="hbm")
    before = dataclasses.asdict(INF2)
    assert op_time(w, INF2) == op_time(w, INF2)
    assert dataclasses.asdict(INF2) == before


_sizes = st.floats(min_value=0, max_value=1e13, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    profile=st.sampled_from([INF1, INF2]),
    engine=st.sampled_from(ENGINES),
    dtype=st.sampled_from(["bf16", "fp16", "fp32", "int8"]),
    location=st.sampled_from(["sbuf", "hbm"]),
    spills=st.booleans(),
    flops=_sizes,
    elements=_sizes,
    weight_bytes=_sizes,
    bytes_in=_sizes,
    bytes_out=_sizes,
    field=st.sampled_from(["flops", "elements", "weight_bytes", "bytes_in", "bytes_out"]),
    extra=st.floats(min_value=0, max_value=1e13, allow_nan=False),
)
def test_op_time_property(
    profile: TargetProfile,
    engine: str,
    dtype: str,
    location: str,
    spills: bool,
    flops: float,
    elements: float,
    weight_bytes: float,
    bytes_in: float,
    bytes_out: float,
    field: str,
    extra: float,
) -> None:
    w = OpWork(
        engine,
        flops=flops,
        elements=elements,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        weight_bytes=weight_bytes,
        weight_location=location,
        dtype=dtype,
        spills=spills,
    )
    t = op_time(w, profile)
    assert t >= profile.dispatch_overhead_s
    more = dataclasses.replace(w, **{field: getattr(w, field) + extra})
    assert op_time(more, profile) >= t
