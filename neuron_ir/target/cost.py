"""The one cost model: an op's work on a target, in seconds.

The batching and pipeline passes, the automatic core count and the simulated timeline
all price work here and nowhere else, so their decisions agree with each other.

The model is a roofline with a fixed issue cost::

    time = max(compute, memory) + dispatch_overhead_s

* compute: Tensor engine ``flops / peak_flops[dtype]`` (fp32 matmuls at the
  autocast dtype's rate, as the Neuron compilers do by default); Vector, Scalar and
  GpSimd ``elements / engine_throughput``; DMA ops compute nothing.
* memory: bytes that cross device memory (HBM/DRAM) for this op, at this core's share
  of the chip's DRAM bandwidth (``dram_bandwidth / cores_per_chip``: every core of a
  chip is assumed busy, which is what the pipeline and batching passes arrange).
  Weights cached in SBUF (static weights) cost nothing per inference; weights in HBM
  are streamed every time. Activations live in SBUF unless ``spills`` says they go
  through HBM, in which case their bytes are streamed too.

Compute and data movement overlap (DMA queues run beside the engines), hence the max.
Pure functions of their arguments: no global state, deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from .profiles import DTYPES, ENGINES, TargetProfile

DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4, "int8": 1}
WEIGHT_LOCATIONS = ("sbuf", "hbm")
TRANSFER_KINDS = ("dma", "link")


@dataclass(frozen=True)
class OpWork:
    """What one op asks of a core.

    ``flops`` counts a multiply-add as 2 and is priced on the Tensor engine only;
    ``elements`` is the elementwise work priced on the Vector/Scalar/GpSimd engines.
    ``bytes_in``/``bytes_out`` are the op's activations; ``spills`` says they are read
    from / written to HBM rather than kept in SBUF. For a ``dma`` op, the bytes moved
    are ``max(bytes_in, bytes_out)``.
    """

    engine: str
    flops: float = 0.0
    elements: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    weight_bytes: float = 0.0
    weight_location: str = "sbuf"
    dtype: str = "bf16"
    spills: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; engines: {', '.join(ENGINES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; dtypes: {', '.join(DTYPES)}")
        if self.weight_location not in WEIGHT_LOCATIONS:
            raise ValueError(f"weight_location must be 'sbuf' or 'hbm', not "
                             f"{self.weight_location!r}")
        for name in ("flops", "elements", "bytes_in", "bytes_out", "weight_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")


def _tensor_peak(dtype: str, profile: TargetProfile) -> float:
    # The compilers autocast fp32 matmuls by default ([CAST1]/[CAST2] in target.py),
    # so fp32 is priced at the autocast dtype's rate when the profile says so.
    if dtype == "fp32" and profile.matmul_autocast is not None:
        dtype = profile.matmul_autocast
    try:
        return profile.peak_flops[dtype]
    except KeyError:
        raise ValueError(f"{profile.name} has no Tensor-engine rate for {dtype}") from None


def compute_time(work: OpWork, profile: TargetProfile) -> float:
    """Seconds the op keeps its engine busy, ignoring data movement and overhead."""
    if work.engine == "tensor":
        return work.flops / _tensor_peak(work.dtype, profile)
    if work.engine == "dma":
        return 0.0
    return work.elements / profile.engine_throughput[work.engine]


def core_dram_bandwidth(profile: TargetProfile) -> float:
    """One core's share of its chip's device-memory bandwidth, bytes/s."""
    return profile.dram_bandwidth / profile.cores_per_chip


def memory_time(work: OpWork, profile: TargetProfile) -> float:
    """Seconds of device-memory traffic the op causes (weights in HBM, spills, DMA)."""
    if work.engine == "dma":
        # A DMA op is pure data movement on the core's share of the chip's DMA engines.
        return max(work.bytes_in, work.bytes_out) / (profile.dma_bandwidth
                                                      / profile.cores_per_chip)
    hbm_bytes = work.weight_bytes if work.weight_location == "hbm" else 0.0
    if work.spills:
        hbm_bytes += work.bytes_in + work.bytes_out
    return hbm_bytes / core_dram_bandwidth(profile)


def op_time(work: OpWork, profile: TargetProfile) -> float:
    """Seconds one op takes on one core: ``max(compute, memory) + dispatch_overhead_s``.

    Compute and memory overlap (the DMA queues run beside the engines); the fixed
    dispatch overhead does not. Always >= ``profile.dispatch_overhead_s`` and
    non-decreasing in flops, elements, weight bytes and (when they move) activation
    bytes.
    """
    return max(compute_time(work, profile), memory_time(work, profile)) \
        + profile.dispatch_overhead_s


def transfer_time(nbytes: float, profile: TargetProfile, kind: str = "dma") -> float:
    """Seconds to move ``nbytes`` between memories or cores.

    ``dma``: on-chip movement (HBM<->SBUF, or core to core on one chip, which goes
    through device memory by DMA: an assumption, there is no published direct path)
    at the chip's DMA bandwidth. ``link``: send/recv between chips over NeuronLink at
    its per-chip bandwidth. One transfer is assumed to have its path to itself. Zero
    bytes cost nothing; otherwise the kind's fixed latency plus bytes / bandwidth, so
    the time is affine in ``nbytes`` (linear in the bandwidth term).
    """
    if kind not in TRANSFER_KINDS:
        raise ValueError(f"transfer kind must be 'dma' or 'link', not {kind!r}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, not {nbytes}")
    if nbytes == 0:
        return 0.0
    if kind == "dma":
        return profile.dma_latency_s + nbytes / profile.dma_bandwidth
    return profile.link_latency_s + nbytes / profile.link_bandwidth


def weights_fit(weight_bytes: float, profile: TargetProfile, cores: int) -> bool:
    """Whether ``weight_bytes`` of static weights can be cached in the SBUF of
    ``cores`` cores, keeping each core's activation reserve
    (``1 - sbuf_weight_fraction``) free. Assumes the weights split evenly."""
    if cores < 1:
        raise ValueError(f"need at least one core, not {cores}")
    if weight_bytes < 0:
        raise ValueError(f"weight_bytes must be >= 0, not {weight_bytes}")
    return weight_bytes <= profile.sbuf_weight_bytes * cores


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a cost-model dtype."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; dtypes: {', '.join(DTYPES)}") from None
