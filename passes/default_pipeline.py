"""``default-pipeline``: the pipeline ``neuron_ir.compile`` runs, by name.

``neuron-opt m.onnx -p 'default-pipeline{target=inf1 dims="sequence:16" batch=4}'`` runs
the same passes as ``neuron_ir.compile(m, target="inf1", dims="sequence:16", batch=4)``: one list of stages
(``neuron_ir.compiler.PIPELINE_STAGES``) serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass


@dataclass(frozen=True)
class DefaultPipelinePass(ModulePass):
    """Run compile's default pipeline: shape-inference ... lower-to-nc."""

    name = "default-pipeline"

    target: str = "inf1"
    input_shapes: str = ""
    dims: str = ""
    batch: int = 0
    """Compile for this batch (0: as the model is, without a batch axis)."""
    batch_dim: str = ""
    """The batch symbol, when the model's own names do not say it."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from neuron_ir.compiler import (
            DEFAULT_PIPELINE,
            batch_symbol_of,
            check_batch,
            run_pipeline,
        )

        batch = check_batch(self.batch) if self.batch else None
        symbol = batch_symbol_of(op, self.batch_dim or None) if batch else None
        run_pipeline(op, DEFAULT_PIPELINE(self.target, self.input_shapes or None,
                                          self.dims or None, batch, symbol,
                                          self.batch_dim or None))
