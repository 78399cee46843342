"""``default-pipeline``: the pipeline ``neuron_ir.compile`` runs, by name.

``neuron-opt m.onnx -p 'default-pipeline{target=inf1 dims="sequence:16" batch=4}'`` runs
the same pass objects as ``neuron_ir.compile(m, target="inf1", dims="sequence:16",
batch=4)``: both take them
from :func:`passes.pipeline.default_pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from .pipeline import default_pipeline, run_passes


@dataclass(frozen=True)
class DefaultPipelinePass(ModulePass):
    """Run compile's default pipeline: shape-inference ... lower-to-nc, pipeline-shard
    (when ``cores`` is not 1), nc-place-weights, nc-estimate."""

    name = "default-pipeline"

    target: str = "inf1"
    input_shapes: str = ""
    dims: str = ""
    batch: int = 0
    """Compile for this batch (0: as the model is, without a batch axis)."""
    batch_dim: str = ""
    """The batch symbol, when the model's own names do not say it."""
    cores: int | str = 1
    """NeuronCore Pipeline stages (``auto``: the fewest that cache every weight)."""
    allow_hbm_weights: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        run_passes(
            op,
            default_pipeline(
                self.target,
                self.input_shapes or None,
                self.dims or None,
                self.batch or None,
                self.batch_dim or None,
                self.cores,
                self.allow_hbm_weights,
            ),
            ctx,
        )
