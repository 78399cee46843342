"""Named pipelines as tuples of pass objects, and the driver that runs them verified.

``neuron_ir.compile`` and ``neuron-opt -p default-pipeline{...}`` both run
:func:`default_pipeline`; its text form (:func:`pipeline_text`) is what an artifact
records and what ``neuron-opt -p`` accepts, so the two stay interchangeable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, VerifyException

from neuron_ir.errors import NeuronIRError, PassError, UsageError
from neuron_ir.ir import make_context

from .estimate import EstimatePass
from .lower_control_flow import LowerControlFlowPass
from .lower_to_nc import LowerToNcPass
from .partition import PartitionPass
from .pipeline_shard import PipelineShardPass
from .place_weights import PlaceWeightsPass
from .rebatch import RebatchPass
from .shape_inference import ShapeInferencePass

InputShapes = Mapping[str, Sequence[int]] | str | None
Dims = Mapping[str, int] | str | None


def _int_dim(value: Any, what: str) -> int:
    """An exact integer, or a PassError: 4.5 must not quietly become 4."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise PassError(f"{what} must be an integer, not {value!r}")
    return int(value)


def _option_name(name: Any, option: str) -> str:
    if not isinstance(name, str) or not name:
        raise PassError(f"{option} names must be non-empty strings, not {name!r}")
    return name


def input_shapes_spec(input_shapes: InputShapes) -> str:
    """The ``input-shapes`` option text (``a:1x128,b:1x128``) of ``shape-inference``."""
    if input_shapes is None:
        return ""
    if isinstance(input_shapes, str):
        return input_shapes
    if not isinstance(input_shapes, Mapping):
        raise UsageError(
            "input_shapes must be a mapping from input name to shape, or "
            f"the option text 'a:1x128,...', not {type(input_shapes).__name__}"
        )
    items = []
    for name, shape in input_shapes.items():
        name = _option_name(name, "input_shapes")
        if isinstance(shape, str) or not isinstance(shape, Sequence):
            raise PassError(f"input_shapes['{name}'] must be a tuple of ints, not {shape!r}")
        dims = [_int_dim(d, f"input_shapes['{name}'] dim {k}") for k, d in enumerate(shape)]
        items.append(f"{name}:{'x'.join(map(str, dims))}")
    return ",".join(items)


def dims_spec(dims: Dims) -> str:
    """The ``dims`` option text (``batch:1,sequence:128``) of ``shape-inference``."""
    if dims is None:
        return ""
    if isinstance(dims, str):
        return dims
    if not isinstance(dims, Mapping):
        raise UsageError(
            "dims must be a mapping from symbol to size, or the option "
            f"text 'batch:1,...', not {type(dims).__name__}"
        )
    return ",".join(
        f"{_option_name(name, 'dims')}:{_int_dim(size, f'dims[{name!r}]')}"
        for name, size in dims.items()
    )


def default_pipeline(
    target: str = "inf1",
    input_shapes: InputShapes = None,
    dims: Dims = None,
    batch: int | None = None,
    batch_dim: str | None = None,
    cores: int | str = 1,
    allow_hbm_weights: bool = False,
) -> tuple[ModulePass, ...]:
    """What ``compile`` runs: shape-inference, lower-control-flow, partition, lower-to-nc,
    pipeline-shard (for more than one core), then weight placement and estimation per
    stage. With ``batch``, ``rebatch`` first (it records the batch symbol, which
    shape-inference then pins to ``batch``) and lower-to-nc records the batch."""
    front: tuple[ModulePass, ...] = ()
    if batch is not None:
        front = (RebatchPass(batch=batch, batch_dim=batch_dim or ""),)
    shard: tuple[ModulePass, ...] = ()
    if cores != 1:
        shard = (PipelineShardPass(cores=cores, allow_hbm_weights=allow_hbm_weights),)
    return (
        *front,
        ShapeInferencePass(input_shapes=input_shapes_spec(input_shapes), dims=dims_spec(dims)),
        LowerControlFlowPass(),
        PartitionPass(target=target),
        LowerToNcPass() if batch is None else LowerToNcPass(batch=batch),
        *shard,
        PlaceWeightsPass(),
        EstimatePass(),
    )


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # The text goes inside a quoted pass option: no character may end it early.
        bad = next((c for c in value if c in '"{}' or ord(c) < 0x20), None)
        if bad is not None:
            raise PassError(f"pipeline option value must not contain {bad!r}: {value!r}")
        return f'"{value}"'
    return str(value)


def pipeline_text(passes: Sequence[ModulePass]) -> str:
    """The flat ``neuron-opt -p`` text of ``passes``; options left at their default are
    omitted."""
    parts = []
    for pass_ in passes:
        options = [
            f"{f.name.replace('_', '-')}={_option_text(getattr(pass_, f.name))}"
            for f in dataclasses.fields(pass_)
            if getattr(pass_, f.name) != f.default
        ]
        parts.append(pass_.name + (f"{{{' '.join(options)}}}" if options else ""))
    return ",".join(parts)


def parse_pipeline(text: str) -> tuple[ModulePass, ...]:
    """Pass objects from a flat ``neuron-opt -p`` pipeline text."""
    from . import available_passes

    try:
        return PassPipeline.parse_spec(available_passes(), text).passes
    except ArgSpecParseError as exc:  # a BaseException in xDSL 0.74
        raise PassError(f"bad pipeline '{text}': {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PassError(f"bad pipeline '{text}': {exc}") from None


class PipelineVerifyError(PassError):
    """The IR failed the one verification after the last pass (``verify_each=False``)."""


def _verifier(verified: bool, verify_each: bool):
    def verify(previous: ModulePass | None, module: ModuleOp, next_: Any) -> None:
        # xDSL calls this as (pass that just ran, module, next pass).
        if previous is None and verified:
            return
        if not verify_each and previous is not None and next_ is not None:
            return
        try:
            module.verify()
        except VerifyException as exc:
            detail = str(exc).strip().splitlines()[0]
            if previous is None:
                raise PassError(f"IR fails to verify before any pass: {detail}") from None
            if not verify_each:
                raise PipelineVerifyError(
                    f"IR fails to verify after the pipeline (last pass '{previous.name}'): {detail}"
                ) from None
            raise PassError(f"IR fails to verify after pass '{previous.name}': {detail}") from None

    return verify


def run_passes(
    module: ModuleOp,
    passes: Sequence[ModulePass],
    ctx: Context | None = None,
    *,
    verified: bool = False,
    verify_each: bool = True,
) -> ModuleOp:
    """Run ``passes`` on ``module`` in place, verifying the IR before and after each.

    ``verified``: the caller vouches for the input (a fresh import verified itself),
    so it is not verified again.  ``verify_each=False`` verifies only after the last
    pass: one verification of BERT-base costs about as much as one of its passes."""
    try:
        PassPipeline(tuple(passes), _verifier(verified, verify_each)).apply(
            ctx or make_context(), module
        )
    except NeuronIRError:
        raise
    except RecursionError:
        raise PassError("the IR nests too deeply for the pass pipeline") from None
    except (DiagnosticException, VerifyException) as exc:
        raise PassError(" ".join(str(exc).split())) from None
    return module
