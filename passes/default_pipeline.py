"""``default-pipeline``: the pipeline ``neuron_ir.compile`` runs, by name.

``neuron-opt m.onnx -p 'default-pipeline{target=inf1 dims="batch:1"}'`` runs the same
passes as ``neuron_ir.compile(m, target="inf1", dims="batch:1")``: one list of stages
(``neuron_ir.compiler.PIPELINE_STAGES``) serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass


@dataclass(frozen=True)
class DefaultPipelinePass(ModulePass):
    """Run compile's default pipeline: shape-inference ... lower-to-nc, pipeline-shard
    (when ``cores`` is not 1), nc-place-weights, nc-estimate."""

    name = "default-pipeline"

    target: str = "inf1"
    input_shapes: str = ""
    dims: str = ""
    batch: int = 1
    cores: int | str = 1
    allow_hbm_weights: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from neuron_ir.compiler import DEFAULT_PIPELINE, run_pipeline

        run_pipeline(op, DEFAULT_PIPELINE(self.target, self.input_shapes or None,
                                          self.dims or None, self.batch, self.cores,
                                          self.allow_hbm_weights))
