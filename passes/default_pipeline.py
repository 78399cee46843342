"""``default-pipeline``: the pipeline ``neuron_ir.compile`` runs, by name.

``neuron-opt m.onnx -p 'default-pipeline{target=inf1 dims="batch:1"}'`` runs the same
pass objects as ``neuron_ir.compile(m, target="inf1", dims="batch:1")``: both take them
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
    """Run compile's default pipeline: shape-inference ... lower-to-nc."""

    name = "default-pipeline"

    target: str = "inf1"
    input_shapes: str = ""
    dims: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        run_passes(op, default_pipeline(self.target, self.input_shapes or None,
                                        self.dims or None), ctx)
