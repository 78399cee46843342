"""The ONNX backend node test cases as a conformance corpus for neuron-ir."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import NeuronIRError
from ..importer import import_model
from ..ir import parse_ir, print_ir


def _is_tensor_typed(model: onnx.ModelProto) -> bool:
    values = list(model.graph.input) + list(model.graph.output)
    return all(v.type.WhichOneof("value") == "tensor_type" for v in values)


@dataclass(frozen=True)
class NodeCase:
    name: str
    model: onnx.ModelProto
    data_sets: list
    rtol: float
    atol: float


@functools.cache
def node_case_list() -> tuple[NodeCase, ...]:
    """``node_cases()`` collected once per process (collecting takes seconds)."""
    return tuple(node_cases())


def node_cases() -> Iterator[NodeCase]:
    """Every tensor-typed node test case that ships with the onnx wheel."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for case in cases:
        if _is_tensor_typed(case.model):
            yield NodeCase(case.name, case.model, case.data_sets, case.rtol, case.atol)


def roundtrip_failure(model: onnx.ModelProto) -> str | None:
    """None if the model imports and print -> parse -> print is stable, else why not."""
    try:
        module = import_model(model)
    except NeuronIRError as exc:
        return f"import: {exc.message}"
    first = print_ir(module)
    try:
        again = print_ir(parse_ir(first))
    except NeuronIRError as exc:
        return f"parse: {exc.message}"
    if again != first:
        return "print -> parse -> print differs"
    return None


def _as_array(value) -> np.ndarray:
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def _feeds_and_names(case: NodeCase) -> tuple[list[str], list[str]]:
    graph = case.model.graph
    initializers = {t.name for t in graph.initializer}
    in_names = [i.name for i in graph.input if i.name not in initializers]
    return in_names, [o.name for o in graph.output]


def _mismatch(case: NodeCase, run, in_names: list[str], out_names: list[str]) -> str | None:
    """None if ``run(feeds)`` reproduces every data set of the case, else why not."""
    for inputs, outputs in case.data_sets:
        feeds = {n: _as_array(v) for n, v in zip(in_names, inputs, strict=False)}
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = run(feeds)
        except NeuronIRError as exc:
            return f"run: {exc.message}"
        except Exception as exc:  # a kernel bug: report it, keep going
            return f"crash: {type(exc).__name__}: {exc}"
        for name, want in zip(out_names, outputs, strict=False):
            want = _as_array(want)
            have = got.get(name)
            if have is None:
                return f"output '{name}' missing"
            if have.dtype != want.dtype:
                return f"output '{name}': dtype {have.dtype}, expected {want.dtype}"
            if have.shape != want.shape:
                return f"output '{name}': shape {have.shape}, expected {want.shape}"
            if want.dtype == object:
                if not np.array_equal(have, want):
                    return f"output '{name}': values differ"
                continue
            try:
                np.testing.assert_allclose(
                    have, want, rtol=case.rtol, atol=case.atol, equal_nan=True
                )
            except AssertionError:
                diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
                return f"output '{name}': values differ (max abs diff {np.nanmax(diff):.3g})"
            except TypeError:
                if not np.array_equal(have, want):
                    return f"output '{name}': values differ"
    return None


def run_failure(case: NodeCase) -> str | None:
    """None if the interpreter reproduces every data set of the case, else why not."""
    from ..interp import Interpreter

    try:
        module = import_model(case.model)
        interpreter = Interpreter(module)
    except NeuronIRError as exc:
        return f"prepare: {exc.message}"
    return _mismatch(case, interpreter.run, *_feeds_and_names(case))


def case_input_shapes(case: NodeCase) -> dict[str, tuple[int, ...]]:
    """Each graph input's shape in the case's first data set (what compile pins)."""
    in_names, _ = _feeds_and_names(case)
    inputs = case.data_sets[0][0] if case.data_sets else []
    return {n: _as_array(v).shape for n, v in zip(in_names, inputs, strict=False)}


def compile_failure(case: NodeCase, target: str = "inf1") -> str | None:
    """None if ``neuron_ir.compile`` (the default pipeline down to ``nc``, inputs pinned
    to the first data set's shapes) reproduces every data set of the case, else why not.

    Data sets whose input shapes differ from the first one's cannot run on a model
    compiled for those shapes and are left out.
    """
    from ..compiler import compile as compile_model

    in_names, out_names = _feeds_and_names(case)
    shapes = case_input_shapes(case)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = compile_model(case.model, target=target, input_shapes=shapes)
    except NeuronIRError as exc:
        return f"compile: {exc.message}"
    except Exception as exc:
        return f"crash: compile: {type(exc).__name__}: {exc}"
    first = [_as_array(v).shape for v in case.data_sets[0][0]] if case.data_sets else []
    same = [ds for ds in case.data_sets if [_as_array(v).shape for v in ds[0]] == first]
    pinned = NodeCase(case.name, case.model, same, case.rtol, case.atol)
    return _mismatch(pinned, compiled.run, in_names, out_names)


def shape_agreement(case: NodeCase) -> tuple[int, int, list[str]]:
    """(agreeing, compared, disagreements) of shape-inference's output types with
    onnx.shape_inference (data_prop on), where onnx infers a static shape.

    Inputs are pinned to the shapes of the case's first data set.
    """
    from xdsl.context import Context

    from passes.pipeline import input_shapes_spec
    from passes.shape_inference import ShapeInferencePass

    from ..ir.util import info_of_type

    model = case.model
    # Only what onnx infers counts, not what the test model declares: clear the
    # declared output shapes of a copy before asking onnx.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for out in probe.graph.output:
        if out.type.WhichOneof("value") == "tensor_type":
            out.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except Exception:
        return 0, 0, []
    theirs = {}
    for out in inferred.graph.output:
        tt = out.type.tensor_type
        if out.type.WhichOneof("value") != "tensor_type" or not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if all(d is not None for d in dims):
            theirs[out.name] = (tt.elem_type, tuple(dims))
    if not theirs:
        return 0, 0, []
    initializers = {t.name for t in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in initializers]
    inputs = case.data_sets[0][0] if case.data_sets else []
    pins = input_shapes_spec(
        {n: _as_array(v).shape for n, v in zip(in_names, inputs, strict=False)}
    )
    try:
        module = import_model(model)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ShapeInferencePass(input_shapes=pins).apply(Context(), module)
    except NeuronIRError as exc:
        return 0, len(theirs), [f"pass: {exc.message}"]
    from xdsl.dialects.func import FuncOp

    main = next(op for op in module.ops if isinstance(op, FuncOp))
    ours = {}
    for k, value in enumerate(main.body.block.last_op.operands):  # type: ignore[union-attr]
        ours[model.graph.output[k].name] = info_of_type(value.type)
    agree, problems = 0, []
    from ..ir.dtypes import BY_ONNX

    for name, (elem, dims) in theirs.items():
        mine = ours.get(name)
        expected_dtype = BY_ONNX[elem].numpy if elem in BY_ONNX else None
        if (
            mine is not None
            and mine.shape == dims
            and (expected_dtype is None or mine.dtype == expected_dtype)
        ):
            agree += 1
        else:
            problems.append(
                f"{name}: ours {None if mine is None else (mine.dtype, mine.shape)}"
                f", onnx {(expected_dtype, dims)}"
            )
    return agree, len(theirs), problems


def sweep(
    check: Callable[[NodeCase], str | None], only: str | None = None
) -> tuple[int, dict[str, str]]:
    """(cases run, {name: failure reason on one line}) of ``check`` over every node test
    case whose name contains ``only`` (all when None): the loop of the conformance tools."""
    failures: dict[str, str] = {}
    total = 0
    for case in node_cases():
        if only and only not in case.name:
            continue
        total += 1
        reason = check(case)
        if reason is not None:
            failures[case.name] = " ".join(reason.split())[:300]
    return total, failures
