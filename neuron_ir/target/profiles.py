"""Named hardware profiles of the NeuronCore generations neuron-ir compiles for.

A profile holds only facts about the hardware (or, where AWS does not publish one, a
stated assumption); turning work into time is :mod:`neuron_ir.target.cost`'s job.

Sources (AWS Neuron documentation, awsdocs-neuron.readthedocs-hosted.com):

* [INF1]  "Inferentia Architecture" (about-neuron/arch/neuron-hardware/inferentia)
* [INF1I] "Amazon EC2 Inf1 Architecture" (…/inf1-arch), the instance-size table
* [NCV1]  "NeuronCore-v1 Architecture" (…/neuron-core-v1)
* [INF2]  "Inferentia2 Architecture" (…/inferentia2)
* [INF2I] "Amazon EC2 Inf2 Architecture" (…/inf2-arch), the instance-size table
* [NCV2]  "NeuronCore-v2 Architecture" (…/neuron-core-v2)
* [NKI2]  "Trainium/Inferentia2 Architecture Guide for NKI" (nki/arch/trainium_inferentia2_arch)
* [CAST1] "Mixed precision and performance-accuracy tuning (neuron-cc)"
* [CAST2] "Mixed Precision and Performance-accuracy Tuning (neuronx-cc)"
* [DESIGN] /work/shared/DESIGN.md, "Target and cost model" (the project's brief)

Units: bytes, bytes per second, FLOP per second, seconds. GiB figures are binary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NeuronIRError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TERA = 1e12
GIGA = 1e9

ENGINES: tuple[str, ...] = ("tensor", "vector", "scalar", "gpsimd", "dma")
"""Engine names shared by the nc dialect, the cost model and the timeline."""

DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp32", "int8")


class FrozenDict(dict):
    """A read-only dict: hashable, picklable and copyable, unlike MappingProxyType, so
    profiles can be saved with an artifact and used as cache keys."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("profile tables are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self


class UnknownTargetError(NeuronIRError, ValueError):
    """A target name that names no profile (also a ValueError for plain callers)."""


@dataclass(frozen=True)
class TargetProfile:
    """One NeuronCore generation as the compiler sees it (all figures per core unless
    the name says per chip)."""

    name: str
    core_version: str  # "v1" | "v2"
    cores_per_chip: int
    max_chips: int  # chips in the largest instance of the family
    peak_flops: Mapping[str, float]  # Tensor-engine peak per dtype, per core
    matmul_autocast: str | None  # dtype fp32 matmuls run at (compiler default), or None
    sbuf_bytes: int  # on-chip state buffer, per core
    psum_bytes: int  # matmul accumulation buffer, per core
    partitions: int  # SBUF/PSUM partitions = lanes of the Vector/Scalar engines
    sbuf_weight_fraction: float  # share of SBUF that static weights may take
    dram_bytes_per_chip: int
    dram_bandwidth: float  # device memory, bytes/s per chip
    dma_bandwidth: float  # on-chip DMA (HBM<->SBUF, core<->core), bytes/s per chip
    link_bandwidth: float  # NeuronLink chip-to-chip, bytes/s per chip
    engine_throughput: Mapping[str, float]  # vector/scalar/gpsimd elements/s per core
    dispatch_overhead_s: float  # fixed cost of issuing one op
    dma_latency_s: float  # fixed cost of one on-chip transfer
    link_latency_s: float  # fixed cost of one chip-to-chip transfer
    engines: tuple[str, ...] = field(default=ENGINES)

    def __post_init__(self) -> None:
        # Freeze the dicts too, so a shared profile cannot be changed by one pass
        # under another's feet.
        object.__setattr__(self, "peak_flops", FrozenDict(self.peak_flops))
        object.__setattr__(self, "engine_throughput", FrozenDict(self.engine_throughput))

    @property
    def sbuf_weight_bytes(self) -> int:
        """SBUF bytes per core that static weights may use."""
        return int(self.sbuf_bytes * self.sbuf_weight_fraction)


# --------------------------------------------------------------------------- inf1
# Clock of NeuronCore-v1: unpublished. [NCV2] says v2's VectorEngine (2.3 TFLOPS FP32)
# is 10x v1's and its ScalarEngine (2.9 TFLOPS FP32) 3x v1's, so v1 has ~0.23 and
# ~0.97 TFLOPS; with [NCV1]'s 256 (vector) FLOP/cycle that implies ~0.9 GHz.
_V2_VECTOR_ELEMS = 128 * 1.4 * GIGA  # see the inf2 note on lanes x clock
_V2_SCALAR_ELEMS = 128 * 1.4 * GIGA

INF1 = TargetProfile(
    name="inf1",
    core_version="v1",
    cores_per_chip=4,  # [INF1] four NeuronCore-v1 per Inferentia chip
    max_chips=16,  # [INF1I] inf1.24xlarge: 16 chips
    peak_flops={
        "bf16": 16 * TERA,  # [NCV1] 16 TFLOPS FP16/BF16 per TensorEngine ([INF1]: 64/chip)
        "fp16": 16 * TERA,
        "int8": 32 * TERA,  # [INF1] 128 INT8 TOPS per chip / 4 cores
        # No fp32 entry: [NCV1] the TensorEngine takes FP16/BF16/INT8 inputs only.
    },
    # [CAST1] neuron-cc casts FP32 operations to BF16 by default (--fast-math all);
    # the hardware has no FP32 matmul, so fp32 matmuls always run at the bf16 rate.
    # Assumption: fp32 matmul/conv weights are therefore stored on the device in bf16
    # (2 bytes; cost.stored_weight_bytes), while neuron-ir's interpreter, the reference,
    # still computes in the model's dtype: results are fp32, the costs are bf16's.
    matmul_autocast="bf16",
    # Assumption: AWS does not publish NeuronCore-v1's SRAM size. 8 MiB per core is
    # chosen from the seed neuroncore-pipeline note: FP16 ResNet-50 (~25.6 M params,
    # ~51 MB) is pipelined over 16 cores (~3.2 MB of weights a core), not 4 (~12.8 MB
    # a core), so the usable cache lies between those; 8 MiB leaves room for
    # activations beside ~6 MiB of weights.
    sbuf_bytes=8 * MiB,
    psum_bytes=2 * MiB,  # assumption: unpublished for v1; taken equal to v2's [NKI2]
    partitions=128,  # assumption: unpublished for v1; taken equal to v2's [NKI2]
    # Assumption: a quarter of SBUF stays free for activations and PSUM spills.
    sbuf_weight_fraction=0.75,
    dram_bytes_per_chip=8 * GiB,  # [INF1] 8 GiB device DRAM
    dram_bandwidth=50 * GiB,  # [INF1] 50 GiB/s
    # Assumption: inf1's DMA rate is unpublished; on-chip moves go through the same
    # DRAM, so they are bounded by its bandwidth.
    dma_bandwidth=50 * GiB,
    link_bandwidth=32 * GiB,  # [INF1I] NeuronLink-v1 32 GiB/s per chip
    engine_throughput={
        # Derived from [NCV2]'s speedup ratios against the v2 figures below, so both
        # generations are on the same footing: vector /10, scalar /3.
        "vector": _V2_VECTOR_ELEMS / 10,
        "scalar": _V2_SCALAR_ELEMS / 3,
        # [NCV1]: v1 has no GpSimd engine (three engines); gather/custom work that the
        # nc dialect assigns to gpsimd runs on the VectorEngine there.
        "gpsimd": _V2_VECTOR_ELEMS / 10,
    },
    # Assumption: issuing an op (instruction stream, engine semaphores, DMA descriptor
    # setup) costs on the order of a microsecond; v1 clocks ~0.9 GHz (above), hence 2 us.
    dispatch_overhead_s=2e-6,
    dma_latency_s=2e-6,  # assumption: DMA setup + DRAM round trip, same order as dispatch
    link_latency_s=5e-6,  # assumption: a chip-to-chip hop costs a few microseconds more
)

# --------------------------------------------------------------------------- inf2
INF2 = TargetProfile(
    name="inf2",
    core_version="v2",
    cores_per_chip=2,  # [INF2] two NeuronCore-v2 per Inferentia2 chip
    max_chips=12,  # [INF2I] inf2.48xlarge: 12 chips
    peak_flops={
        # [INF2] 190 FP16/BF16/cFP8/TF32 TFLOPS per chip of 2 cores = 95 per core;
        # [NCV2] says "over 90" per TensorEngine and [DESIGN] "about 90": 95 is the
        # exact published figure and agrees with both.
        "bf16": 95 * TERA,
        "fp16": 95 * TERA,
        "fp32": 23.75 * TERA,  # [INF2] 47.5 FP32 TFLOPS per chip / 2
        "int8": 190 * TERA,  # [INF2] 380 INT8 TOPS per chip / 2
    },
    # [CAST2] neuronx-cc by default casts FP32 matrix multiplications to BF16
    # (--auto-cast matmult). As for inf1, weights are counted in bf16 on the device
    # while the interpreter computes in the model's dtype.
    matmul_autocast="bf16",
    sbuf_bytes=24 * MiB,  # [NKI2], [DESIGN]: 24 MiB state buffer per core
    psum_bytes=2 * MiB,  # [NKI2], [DESIGN]: 2 MiB PSUM per core
    partitions=128,  # [NKI2], [DESIGN]: 128 partitions
    sbuf_weight_fraction=0.75,  # assumption, as for inf1
    dram_bytes_per_chip=32 * GiB,  # [INF2] 32 GiB HBM
    dram_bandwidth=820 * GiB,  # [INF2] 820 GiB/s
    dma_bandwidth=1 * TERA,  # [INF2] "1 TB/sec of DMA bandwidth"
    link_bandwidth=192 * GiB,  # [INF2I] NeuronLink-v2 192 GiB/s per chip
    engine_throughput={
        # Assumption: one element per partition lane per cycle (128 lanes, [NKI2]) at
        # an assumed 1.4 GHz (no clock published in the pages consulted). The FLOPS
        # [NCV2] quotes (Vector 2.3, Scalar 2.9 TFLOPS FP32) count several FLOPs per
        # element-instruction and would overstate elementwise speed ~10x.
        "vector": _V2_VECTOR_ELEMS,
        "scalar": _V2_SCALAR_ELEMS,
        # [NCV2] eight 512-bit processors = 8 x 16 fp32 lanes = 128 lanes; same
        # assumed clock. General-purpose C code, so treat this as an upper bound.
        "gpsimd": 8 * 16 * 1.4 * GIGA,
    },
    dispatch_overhead_s=1e-6,  # assumption: see inf1; faster engines, ~1 us
    dma_latency_s=1e-6,  # assumption
    link_latency_s=3e-6,  # assumption
)

TARGETS: Mapping[str, TargetProfile] = FrozenDict({"inf1": INF1, "inf2": INF2})


def get_target(name: str | TargetProfile) -> TargetProfile:
    """The profile called ``name`` (a profile is returned unchanged)."""
    if isinstance(name, TargetProfile):
        return name
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(TARGETS))
        raise UnknownTargetError(f"unknown target {name!r}; known targets: {known}") from None


def total_cores(profile: TargetProfile, chips: int) -> int:
    """NeuronCores on ``chips`` chips of this target."""
    if not 1 <= chips <= profile.max_chips:
        raise ValueError(f"{profile.name} has 1 to {profile.max_chips} chips, not {chips}")
    return profile.cores_per_chip * chips


def max_cores(profile: TargetProfile) -> int:
    """NeuronCores of the largest instance of this target."""
    return profile.cores_per_chip * profile.max_chips


def sbuf_capacity(profile: TargetProfile, cores: int) -> int:
    """Total SBUF bytes of ``cores`` cores."""
    if cores < 1:
        raise ValueError(f"need at least one core, not {cores}")
    return profile.sbuf_bytes * cores


@dataclass(frozen=True)
class Instance:
    """An EC2 instance size: how many chips of which target it carries."""

    name: str
    target: str
    chips: int
    vcpus: int

    @property
    def cores(self) -> int:
        return TARGETS[self.target].cores_per_chip * self.chips


# [INF1I] and [INF2I], the instance-size tables: chips and vCPUs per size.
INSTANCES: Mapping[str, Instance] = FrozenDict(
    {
        i.name: i
        for i in (
            Instance("inf1.xlarge", "inf1", 1, 4),
            Instance("inf1.2xlarge", "inf1", 1, 8),
            Instance("inf1.6xlarge", "inf1", 4, 24),
            Instance("inf1.24xlarge", "inf1", 16, 96),
            Instance("inf2.xlarge", "inf2", 1, 4),
            Instance("inf2.8xlarge", "inf2", 1, 32),
            Instance("inf2.24xlarge", "inf2", 6, 96),
            Instance("inf2.48xlarge", "inf2", 12, 192),
        )
    }
)


class UnknownInstanceError(NeuronIRError, ValueError):
    """An instance name that names no known size."""


def get_instance(name: str) -> Instance:
    """The instance size called ``name`` (``inf1.6xlarge``, ...)."""
    try:
        return INSTANCES[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(INSTANCES)
        raise UnknownInstanceError(f"unknown instance {name!r}; known instances: {known}") from None
