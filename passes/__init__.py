"""The pass registry: every pass of neuron-ir by name, one file a pass.

Each entry maps a pass name (as used in ``neuron-opt -p``) to a factory returning
the pass class, so that importing the registry stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass


def _shape_inference() -> type[ModulePass]:
    from .shape_inference import ShapeInferencePass

    return ShapeInferencePass


def _lower_control_flow() -> type[ModulePass]:
    from .lower_control_flow import LowerControlFlowPass

    return LowerControlFlowPass


def _partition() -> type[ModulePass]:
    from .partition import PartitionPass

    return PartitionPass


def _lower_to_nc() -> type[ModulePass]:
    from .lower_to_nc import LowerToNcPass

    return LowerToNcPass


def _place_weights() -> type[ModulePass]:
    from .place_weights import PlaceWeightsPass

    return PlaceWeightsPass


def _estimate() -> type[ModulePass]:
    from .estimate import EstimatePass

    return EstimatePass


def _pipeline_shard() -> type[ModulePass]:
    from .pipeline_shard import PipelineShardPass

    return PipelineShardPass


def _rebatch() -> type[ModulePass]:
    from .rebatch import RebatchPass

    return RebatchPass


def _default_pipeline() -> type[ModulePass]:
    from .default_pipeline import DefaultPipelinePass

    return DefaultPipelinePass


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "default-pipeline": _default_pipeline,
    "lower-to-nc": _lower_to_nc,
    "pipeline-shard": _pipeline_shard,
    "nc-place-weights": _place_weights,
    "nc-estimate": _estimate,
    "partition": _partition,
    "rebatch": _rebatch,
    "shape-inference": _shape_inference,
    "lower-control-flow": _lower_control_flow,
}


def available_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    return dict(PASSES)
