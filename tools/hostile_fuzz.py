#!/usr/bin/env python3
"""Hostile-input fuzzer: feed neuron-ir what a careless user or an attacker would.

Each case is one command-line run (``neuron-opt``/``neuron-run``, called through their
``main`` exactly as the console scripts do) or one library call, in a worker process
forked from this one, under a 10 s limit and a memory cap. A case passes when it ends in
success or in exactly one ``error:`` line (exit code 1) / a ``NeuronIRError``, with no
traceback, no hang, every given file's bytes unchanged and no file written but the
outputs asked for (and those only on success).

    python tools/hostile_fuzz.py --cases 2000 --seed 1

prints the counts: cases, passed-with-success, clean errors, tracebacks, hangs, files
changed, unclean stderr and name round-trip failures, then the first failures. The test
suite (tests/test_hostile.py) runs a sample of the same cases.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]

TIMEOUT = 10.0  # seconds a case may take
MEMORY_LIMIT = 3 << 30  # bytes of address space a worker may map
KINDS = ("onnx_bytes", "onnx_proto", "names", "options", "artifact", "ir_text", "run_io", "api")

# ---------------------------------------------------------------------------
# seed models


def _vi(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "seed", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def seed_models() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """Small valid models covering weights (some over the importer's strip size),
    shape arithmetic, control flow, convolution and non-ASCII names."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    seeds = {}
    w1 = numpy_helper.from_array(rng.standard_normal((8, 64)).astype(f32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(64).astype(f32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((64, 4)).astype(f32), "w2")
    seeds["mlp"] = (
        _model(
            [
                helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
                helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
                helper.make_node("Relu", ["hb"], ["r"], name="relu"),
                helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
            ],
            [_vi("x", shape=[2, 8])],
            [_vi("y", shape=[2, 4])],
            [w1, b1, w2],
        ),
        {"x": rng.standard_normal((2, 8)).astype(f32)},
    )
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    seeds["shape"] = (
        _model(
            [
                helper.make_node("Shape", ["x"], ["s"]),
                helper.make_node("Gather", ["s", "zero"], ["first"], axis=0),
                helper.make_node("Concat", ["first", "minus1"], ["target"], axis=0),
                helper.make_node("Reshape", ["x", "target"], ["flat"]),
                helper.make_node(
                    "ConstantOfShape",
                    ["s"],
                    ["ones"],
                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
                ),
                helper.make_node("Add", ["x", "ones"], ["y"]),
            ],
            [_vi("x", shape=[2, 3, 4])],
            [_vi("y", shape=[2, 3, 4]), _vi("flat", shape=[2, 12])],
            [minus1, zero],
        ),
        {"x": rng.standard_normal((2, 3, 4)).astype(f32)},
    )
    then = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])], "then", [], [_vi("t", shape=[3])]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", shape=[3])]
    )
    seeds["if"] = (
        _model(
            [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
            [_vi("x", shape=[3]), _vi("c", TensorProto.BOOL, [])],
            [_vi("y", shape=[3])],
        ),
        {"x": rng.standard_normal(3).astype(f32), "c": np.array(True)},
    )
    wc = numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(f32), "wc")
    seeds["conv"] = (
        _model(
            [
                helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", ["c"], ["r"]),
                helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
            ],
            [_vi("x", shape=[1, 2, 6, 6])],
            [_vi("y", shape=[1, 3, 3, 3])],
            [wc],
        ),
        {"x": rng.standard_normal((1, 2, 6, 6)).astype(f32)},
    )
    seeds["unicode"] = (
        _model(
            [
                helper.make_node("Relu", ["λ输入"], ['中间 "值"'], name="节点"),
                helper.make_node("Neg", ['中间 "值"'], ["ü出\\"], name=""),
            ],
            [_vi("λ输入", shape=[2, 3])],
            [_vi("ü出\\", shape=[2, 3])],
        ),
        {"λ输入": rng.standard_normal((2, 3)).astype(f32)},
    )
    return seeds


# ---------------------------------------------------------------------------
# cases


@dataclass
class Case:
    kind: str
    tool: str  # "opt", "run" or "lib"
    argv: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # written into the case dir
    outputs: list[str] = field(default_factory=list)  # files the run may create
    call: dict = field(default_factory=dict)  # for tool == "lib"
    note: str = ""


_ALPHABET = "abcXYZ019_-.$%@#^ \t\n\"\\'{}[]()<>:;,=λ输入ü出😀\u200b\u00a0\u0301\x00\x01\x7f"


def _text(rng: random.Random, lo: int = 0, hi: int = 12) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(lo, hi)))


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        op = rng.randrange(7)
        i = rng.randrange(len(buf))
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.randrange(256)
        elif op == 2:
            del buf[i : i + rng.randint(1, 16)]
        elif op == 3:
            j = rng.randrange(len(buf))
            buf[j:j] = buf[i : i + rng.randint(1, 16)]
        elif op == 4:
            del buf[i:]
        elif op == 5:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            buf[i] = rng.choice([0x00, 0xFF, 0x80, 0x7F, 0xC0])
    return bytes(buf)


def _string_fields(msg, out: list) -> None:
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_STRING and not fd.is_repeated:
            out.append((msg, fd.name, None))
        elif fd.type == fd.TYPE_STRING:
            out.extend((msg, fd.name, k) for k in range(len(value)))
        elif fd.type == fd.TYPE_MESSAGE:
            for sub in value if fd.is_repeated else [value]:
                _string_fields(sub, out)


def _mutate_proto(rng: random.Random, model: onnx.ModelProto) -> bytes:
    """Semantic mutations: each is something invalid ONNX or a hostile model does."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(13)
        if op == 0 and g.node:  # a random op type
            rng.choice(g.node).op_type = rng.choice(
                ["Foo", "", "Add", "Loop", "If", "Conv", "Range", "ConstantOfShape", _text(rng)]
            )
        elif op == 1 and g.node:  # two nodes writing one value
            g.node.append(g.node[rng.randrange(len(g.node))])
        elif op == 2:  # duplicate graph input
            if g.input:
                g.input.append(g.input[0])
        elif op == 3 and g.output and rng.random() < 0.3:  # no outputs
            del g.output[:]
        elif op == 4:  # a dim changed
            vis = list(g.input) + list(g.output)
            if vis:
                dims = rng.choice(vis).type.tensor_type.shape.dim
                if dims:
                    d = rng.choice(dims)
                    choice = rng.randrange(3)
                    if choice == 0:
                        d.dim_value = rng.choice([0, 1, 2**31, 2**40, 2**62])
                    elif choice == 1:
                        d.dim_param = _text(rng, 0, 4)
                    else:
                        d.dim_value = rng.randint(1, 9)
        elif op == 5 and g.initializer:  # weight bytes that disagree with the dims
            t = rng.choice(g.initializer)
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)]
        elif op == 6 and g.initializer:
            t = rng.choice(g.initializer)
            t.data_type = rng.choice([0, 1, 7, 8, 9, 16, 40, 99])
        elif op == 7:  # an element type mix (Add of float and int64)
            if g.input:
                g.input[0].type.tensor_type.elem_type = rng.choice([7, 6, 10, 11, 13])
        elif op == 8 and g.node:  # huge or hostile attribute
            n = rng.choice(g.node)
            n.attribute.append(
                helper.make_attribute(
                    rng.choice(["axis", "pads", "mode", "value"]),
                    rng.choice([2**62, -1, [1] * 9, "x"]),
                )
            )
        elif op == 9:  # the default opset
            m.opset_import[0].version = rng.choice([0, 1, 6, 99, 2**31])
        elif op == 10:  # a string field made invalid UTF-8
            fields: list = []
            _string_fields(m, fields)
            if fields:
                msg, name, k = rng.choice(fields)
                data = m.SerializeToString()
                text = getattr(msg, name) if k is None else getattr(msg, name)[k]
                if text and isinstance(text, str):
                    raw = text.encode("utf-8")
                    bad = b"\xff" + raw[1:]  # same length: the protobuf still parses
                    data = data.replace(raw, bad, 1) if raw in data else data
                    return data
        elif op == 11:  # big folded constants (Range/ConstantOfShape feeding runtime ops)
            shape = numpy_helper.from_array(
                np.array([2**20, 2**20], np.int64), f"big{rng.randrange(99)}"
            )
            g.initializer.append(shape)
            g.node.append(helper.make_node("ConstantOfShape", [shape.name], ["huge"]))
            g.output.append(_vi("huge"))
        elif op == 12:  # external data pointing somewhere hostile
            if g.initializer:
                t = rng.choice(g.initializer)
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                del t.external_data[:]
                e = t.external_data.add()
                e.key, e.value = (
                    "location",
                    rng.choice(
                        [
                            "../../etc/passwd",
                            "/etc/passwd",
                            "in.npz",
                            "fifo",
                            "nope.bin",
                            "weights.bin",
                            "",
                        ]
                    ),
                )
                if rng.random() < 0.5:
                    e = t.external_data.add()
                    e.key, e.value = "offset", str(rng.choice([-64, 0, 64, 2**40]))
    return m.SerializeToString()


def _npz(feeds: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **feeds)
    return buffer.getvalue()


class Generator:
    """Deterministic cases from a seed: the same seed gives the same cases."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.seeds = seed_models()
        self.seed_bytes = {k: m.SerializeToString() for k, (m, _) in self.seeds.items()}
        self._texts: dict[str, str] = {}
        self._artifacts: dict[str, bytes] = {}

    def seed(self) -> tuple[str, onnx.ModelProto, dict[str, np.ndarray]]:
        name = self.rng.choice(sorted(self.seeds))
        model, feeds = self.seeds[name]
        return name, model, feeds

    def ir_text(self, name: str) -> str:
        if name not in self._texts:
            from neuron_ir import import_model
            from neuron_ir.ir import print_ir

            self._texts[name] = print_ir(import_model(self.seeds[name][0]))
        return self._texts[name]

    def artifact(self, name: str) -> bytes:
        if name not in self._artifacts:
            from neuron_ir import compile

            model, feeds = self.seeds[name]
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "a.nir")
                compile(model, input_shapes={k: v.shape for k, v in feeds.items()}).save(path)
                self._artifacts[name] = Path(path).read_bytes()
        return self._artifacts[name]

    def case(self, kind: str | None = None) -> Case:
        kind = kind or self.rng.choice(KINDS)
        return getattr(self, f"_{kind}")()

    def _run_model(self, kind: str, model_file: str, data: bytes, feeds) -> Case:
        r = self.rng.random()
        files = {model_file: data, "in.npz": _npz(feeds)}
        if r < 0.55:
            return Case(kind, "opt", [model_file], files)
        if r < 0.75:
            return Case(kind, "opt", [model_file, "-p", "default-pipeline"], files)
        return Case(
            kind,
            "run",
            [model_file, "--inputs", "in.npz", "--output", "out.npz"],
            files,
            outputs=["out.npz"],
        )

    def _onnx_bytes(self) -> Case:
        name, _model_, feeds = self.seed()
        return self._run_model(
            "onnx_bytes", "m.onnx", _mutate_bytes(self.rng, self.seed_bytes[name]), feeds
        )

    def _onnx_proto(self) -> Case:
        name, model, feeds = self.seed()
        case = self._run_model("onnx_proto", "m.onnx", _mutate_proto(self.rng, model), feeds)
        case.files["weights.bin"] = bytes(64)
        return case

    def _names(self) -> Case:
        rng = self.rng
        names = [_text(rng, 1, 10) for _ in range(4)]
        model = _model(
            [
                helper.make_node("Relu", [names[0]], [names[1]], name=names[3]),
                helper.make_node("Neg", [names[1]], [names[2]]),
            ],
            [_vi(names[0], shape=[2])],
            [_vi(names[2], shape=[2])],
        )
        return Case(
            "names",
            "lib",
            call={"fn": "roundtrip", "model": model.SerializeToString(), "names": names},
        )

    def _options(self) -> Case:
        rng = self.rng
        name, model, feeds = self.seed()
        files = {"m.onnx": self.seed_bytes[name], "in.npz": _npz(feeds)}
        inp = next(iter(feeds))

        def value() -> str:
            return rng.choice(
                [
                    _text(rng),
                    f"{inp}:{rng.choice(['2x8', '0x8', '2x8x', 'x', '4.5x32', '-1', '2**40', '99999999999999999999'])}",
                    f"{inp}:2x8,{inp}:2x8",
                    "batch:0",
                    "batch:1,batch:2",
                    "",
                    ",",
                    ":",
                    "a:1;b:2",
                    '"',
                    "}",
                    "{",
                    "inf1",
                    "inf2",
                    "trn1",
                    "ε",
                    str(rng.randint(-5, 10**12)),
                ]
            )

        r = rng.random()
        if r < 0.5:
            from passes import available_passes

            passes = sorted(available_passes()) + ["nope", "", "default-pipeline"]
            parts = []
            for _ in range(rng.randint(1, 3)):
                p = rng.choice(passes)
                if rng.random() < 0.6:
                    key = rng.choice(
                        [
                            "input-shapes",
                            "dims",
                            "target",
                            "batch",
                            "min-subgraph-size",
                            "report",
                            _text(rng, 0, 5),
                        ]
                    )
                    quote = rng.choice(['"', "", "'"])
                    p += f"{{{key}={quote}{value()}{quote}}}"
                parts.append(p)
            return Case(
                "options",
                "opt",
                [
                    "m.onnx",
                    "-p",
                    rng.choice([",", ", ", ""]).join(parts) if rng.random() < 0.95 else _text(rng),
                ],
                files,
            )
        argv = ["m.onnx", "--inputs", "in.npz"]
        for flag in rng.sample(["--input-shapes", "--dims", "--target"], rng.randint(1, 3)):
            argv += [flag, value()]
        if rng.random() < 0.2:
            argv.append(rng.choice(["--bogus", "-x", "--input", "x", "--input=a=b.npy"]))
        return Case("options", "run", argv, files)

    def _artifact(self) -> Case:
        rng = self.rng
        name, _model_, feeds = self.seed()
        data = bytearray(self.artifact(name))
        r = rng.random()
        if r < 0.4:
            data = bytearray(_mutate_bytes(rng, bytes(data)))
            note = "bytes"
        else:
            # Edit the JSON header (offsets, lengths, names, target) and, half the
            # time, re-sign it so the checks behind the checksum are exercised too.
            (meta_len,) = struct.unpack_from("<Q", data, 12)
            meta = json.loads(bytes(data[20 : 20 + meta_len]))
            ir_start = 20 + meta_len + 4
            ir = bytes(data[ir_start : ir_start + meta["ir_length"]])
            blobs = bytes(data[ir_start + len(ir) + (-(ir_start + len(ir)) % 64) :])
            key = rng.choice(sorted(meta))
            if key == "blobs" and meta["blobs"]:
                blob = rng.choice(sorted(meta["blobs"]))
                which = rng.randrange(2)
                meta["blobs"][blob][which] += rng.choice([-64, 64, 1, -1, 2**40])
            else:
                meta[key] = rng.choice([None, "", "inf9", [1], {}, 2**63, -1, "x" * 5, ["a", "a"]])
            new = json.dumps(meta).encode()
            head = bytes(data[:12]) + struct.pack("<Q", len(new)) + new
            resign = rng.random() < 0.5
            crc = zlib.crc32(head) if resign else struct.unpack_from("<I", data, 20 + meta_len)[0]
            body = head + struct.pack("<I", crc) + ir
            # The data section stays 64-byte aligned, as the writer puts it.
            data = bytearray(body + bytes(-len(body) % 64) + blobs)
            note = f"meta {key} resigned={resign}"
        return Case(
            "artifact",
            "run",
            ["a.nir", "--inputs", "in.npz"],
            {"a.nir": bytes(data), "in.npz": _npz(feeds)},
            note=note,
        )

    def _ir_text(self) -> Case:
        rng = self.rng
        name, _model_, feeds = self.seed()
        text = self.ir_text(name)
        r = rng.random()
        if r < 0.15:
            text = rng.choice(
                [
                    "builtin.module {" * rng.choice([100, 3000, 20000]),
                    'builtin.module attributes {a = "' + "A" * rng.choice([40, 10000]),
                    "builtin.module {\n" + '"' * rng.randint(1, 50),
                ]
            )
        else:
            for _ in range(rng.randint(1, 4)):
                if not text:
                    break
                i = rng.randrange(len(text))
                op = rng.randrange(8)
                if op >= 6:
                    # A number changed (a dim, a hex digit, an attribute): text that
                    # still parses and reaches verification or the interpreter.
                    spots = [k for k, c in enumerate(text) if c.isdigit()]
                    if spots:
                        k = rng.choice(spots)
                        text = text[:k] + rng.choice("0123456789") + text[k + 1 :]
                elif op == 0:
                    text = (
                        text[:i]
                        + rng.choice(
                            ['"', "{", "}", "\\", "<", ">", "%", "@", "0x", "dense<", "\n"]
                        )
                        + text[i:]
                    )
                elif op == 1:
                    text = text[:i] + text[i + rng.randint(1, 40) :]
                elif op == 2:
                    text = text[:i] + _text(rng, 1, 20) + text[i:]
                elif op == 3:
                    text = text[:i]
                elif op == 4:
                    j = rng.randrange(len(text))
                    text = text[:i] + text[j : j + 60] + text[i:]
                else:
                    text = text.replace("0x", "0x" + "F" * rng.randint(1, 9), 1)
        files = {"x.mlir": text.encode("utf-8", "surrogatepass"), "in.npz": _npz(feeds)}
        if rng.random() < 0.7:
            return Case("ir_text", "opt", ["x.mlir"], files)
        return Case("ir_text", "run", ["x.mlir", "--inputs", "in.npz"], files)

    def _run_io(self) -> Case:
        rng = self.rng
        name, _model_, feeds = self.seed()
        files = {
            "m.onnx": self.seed_bytes[name],
            "in.npz": _npz(feeds),
            "notes.txt": b"hi\n",
            "sub/keep.txt": b"keep",
        }
        inp = next(iter(feeds))
        files[f"{inp}.npy"] = _npy(feeds[inp]) if inp.isascii() else b""
        out = rng.choice(
            [
                "in.npz",
                "m.onnx",
                "y.out",
                "sub",
                "nodir/y.npz",
                "y.npz",
                "./in.npz",
                "notes.txt",
                f"{inp}.npy",
                "",
            ]
        )
        trace = rng.choice([None, "t.json", "in.npz", "m.onnx", "sub", "nodir/t.json", out])
        argv = [
            "m.onnx",
            "--inputs",
            rng.choice(["in.npz", "notes.txt", "m.onnx", "sub", "missing.npz", "in.npz"]),
        ]
        if rng.random() < 0.3:
            argv += ["--input", f"{inp}={rng.choice([f'{inp}.npy', 'notes.txt', 'in.npz'])}"]
        outputs = []
        if out:
            argv += ["--output", out]
            outputs.append(out)
        if trace:
            argv += ["--trace", trace]
            outputs.append(trace)
        if rng.random() < 0.5:
            argv += ["--target", rng.choice(["inf1", "inf2"])]
        return Case("run_io", "run", argv, files, outputs=outputs)

    def _api(self) -> Case:
        rng = self.rng
        name, _model_, feeds = self.seed()
        fn = rng.choice(
            [
                "compile",
                "compile_shapes",
                "compile_dims",
                "compile_target",
                "import",
                "run",
                "parse",
                "load",
            ]
        )
        return Case(
            "api",
            "lib",
            call={
                "fn": fn,
                "model": self.seed_bytes[name],
                "arg": rng.randrange(_BAD_COUNT),
                "feeds": _npz(feeds),
            },
        )


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


_BAD_COUNT = 19  # the bad values _lib_call passes (built there: not all pickle)


# ---------------------------------------------------------------------------
# the worker: runs one case in-process, in a forked child


def _lib_call(call: dict, workdir: str) -> str:
    """Run one library call; return "ok" or "error". Anything else raises."""
    import neuron_ir
    from neuron_ir.errors import NeuronIRError
    from neuron_ir.ir import parse_ir, print_ir

    fn = call["fn"]
    try:
        if fn == "roundtrip":
            # Names are arbitrary text: import, print, parse back and compare.
            module = neuron_ir.import_model(call["model"])
            text = print_ir(module)
            again = parse_ir(text, source="roundtrip")
            if print_ir(again) != text:
                raise AssertionError("print(parse(print(m))) != print(m)")
            kept = {
                a.data
                for op in again.walk()
                for a in op.attributes.values()
                if isinstance(getattr(a, "data", None), str)
            }
            func = next(iter(again.ops))
            for holder in (func.arg_attrs, func.res_attrs):
                for entry in holder.data:
                    kept.update(
                        v.data
                        for v in entry.data.values()
                        if isinstance(getattr(v, "data", None), str)
                    )
            names = call["names"]
            for n in (names[0], names[2]):
                if n not in kept:
                    raise AssertionError(f"name {n!r} not kept in onnx.name")
            return "ok"
        bad_values = [
            None,
            42,
            4.5,
            "",
            os.path.join(workdir, "missing.onnx"),
            b"",
            b"\x00" * 10,
            [],
            {},
            {"x": (4.5, 2)},
            {"x": "2x8"},
            {1: (2,)},
            "x:2x8,x:2x8",
            "batch:0",
            object(),
            True,
            (2, 8),
            {"x": (2, -1)},
            {"x": np.ones(2)},
        ]
        bad = bad_values[call["arg"]]
        model = call["model"]
        if fn == "compile":
            neuron_ir.compile(bad)
        elif fn == "compile_shapes":
            neuron_ir.compile(model, input_shapes=bad)
        elif fn == "compile_dims":
            neuron_ir.compile(model, dims=bad)
        elif fn == "compile_target":
            neuron_ir.compile(model, target=bad)
        elif fn == "import":
            neuron_ir.import_model(bad)
        elif fn == "run":
            with np.load(io.BytesIO(call["feeds"])) as archive:
                feeds = {k: archive[k] for k in archive.files}
            compiled = neuron_ir.compile(model, input_shapes={k: v.shape for k, v in feeds.items()})
            compiled.run(bad)
        elif fn == "parse":
            parse_ir(bad)
        elif fn == "load":
            neuron_ir.compiler.load(bad)
        return "ok"
    except NeuronIRError:
        return "error"


def _execute(case: Case, workdir: str) -> dict:
    out, err = io.StringIO(), io.StringIO()
    result: dict = {"rc": None, "stdout": "", "stderr": "", "traceback": None}
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if case.tool == "opt":
                    from neuron_ir.cli.opt import main

                    result["rc"] = main(list(case.argv))
                elif case.tool == "run":
                    from neuron_ir.cli.run import main

                    result["rc"] = main(list(case.argv))
                else:
                    result["lib"] = _lib_call(case.call, workdir)
                    result["rc"] = 0 if result["lib"] == "ok" else 1
            except SystemExit as exc:
                result["rc"] = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - this is what the fuzzer looks for
                result["traceback"] = traceback.format_exc()
    finally:
        os.chdir(cwd)
    result["stdout"], result["stderr"] = out.getvalue()[-2000:], err.getvalue()[-4000:]
    return result


def _worker(conn) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import warnings

    warnings.simplefilter("default")  # a warning printed is a finding, not an error
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        case, workdir = item
        conn.send(_execute(case, workdir))


class Runner:
    """Runs cases in a forked worker; a case over TIMEOUT kills and replaces it."""

    def __init__(self, timeout: float = TIMEOUT):
        self.timeout = timeout
        self.ctx = multiprocessing.get_context("fork")
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc = self.conn = None

    def run(self, case: Case, workdir: str) -> dict:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((case, workdir))
        if not self.conn.poll(self.timeout):
            self._kill()
            return {"hang": True}
        try:
            return self.conn.recv()
        except (EOFError, ConnectionResetError):
            code = self.proc.exitcode if self.proc else None
            self._kill()
            return {"crash": f"worker died (exit code {code})"}

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.send(None)
            except OSError:
                pass
        if self.proc is not None:
            self.proc.join(5)
        self._kill()


# ---------------------------------------------------------------------------
# judging


def _snapshot(root: str) -> dict[str, str]:
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            if not os.path.isfile(path):  # a FIFO: opening it would block
                found[rel] = "not a regular file"
                continue
            try:
                with open(path, "rb") as fh:
                    found[rel] = hashlib.sha256(fh.read()).hexdigest()
            except OSError:
                found[rel] = "?"
    return found


@dataclass
class Verdict:
    outcome: str  # "ok", "error", "traceback", "hang", "files", "unclean", "roundtrip"
    detail: str = ""


def judge(case: Case, result: dict, before: dict[str, str], after: dict[str, str]) -> Verdict:
    if result.get("hang"):
        return Verdict("hang", f"over {TIMEOUT:.0f} s")
    if result.get("crash"):
        return Verdict("traceback", result["crash"])
    if result.get("traceback"):
        text = result["traceback"]
        if case.kind == "names" and "AssertionError" in text:
            return Verdict("roundtrip", text.strip().splitlines()[-1])
        return Verdict("traceback", text.strip().splitlines()[-1])
    stderr = result.get("stderr", "")
    if "Traceback" in stderr:
        return Verdict("traceback", stderr.strip().splitlines()[-1])
    rc = result.get("rc")
    # Only a successful run may write, and only the outputs it was given.
    allowed = {os.path.normpath(o) for o in case.outputs} if rc == 0 else set()
    changed = [
        f for f, h in before.items() if after.get(f) != h and os.path.normpath(f) not in allowed
    ]
    created = [f for f in after if f not in before and os.path.normpath(f) not in allowed]
    if changed or created:
        return Verdict("files", f"changed {changed} created {created} (rc {rc})")
    if rc == 0:
        if case.tool != "lib" and stderr.strip():
            return Verdict("unclean", f"success with stderr: {stderr.strip()[:200]}")
        return Verdict("ok")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if case.tool == "lib":
        return Verdict("error")
    if rc != 1 or len(lines) != 1 or not lines[0].startswith("error: "):
        return Verdict("unclean", f"rc {rc}, stderr {stderr.strip()[:300]!r}")
    return Verdict("error", lines[0])


def run_case(runner: Runner, case: Case, base: str) -> Verdict:
    workdir = tempfile.mkdtemp(dir=base)
    try:
        for rel, data in case.files.items():
            path = os.path.join(workdir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        if case.kind == "onnx_proto":
            os.mkfifo(os.path.join(workdir, "fifo"))
        before = _snapshot(workdir)
        result = runner.run(case, workdir)
        after = _snapshot(workdir)
        return judge(case, result, before, after)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def fuzz(
    cases: int,
    seed: int,
    kinds: tuple[str, ...] = KINDS,
    timeout: float = TIMEOUT,
    progress: bool = False,
) -> tuple[Counter, list[tuple[Case, Verdict]]]:
    """Run ``cases`` cases, spread round-robin over ``kinds``; the counts by outcome and
    the failing cases."""
    gen = Generator(seed)
    runner = Runner(timeout)
    counts: Counter = Counter()
    failures: list[tuple[Case, Verdict]] = []
    base = tempfile.mkdtemp(prefix="hostile-")
    try:
        for i in range(cases):
            case = gen.case(kinds[i % len(kinds)])
            verdict = run_case(runner, case, base)
            counts[verdict.outcome] += 1
            counts[f"kind:{case.kind}"] += 1
            if verdict.outcome not in ("ok", "error"):
                failures.append((case, verdict))
            if progress and (i + 1) % 100 == 0:
                print(f"  {i + 1} cases, {len(failures)} failures", file=sys.stderr, flush=True)
    finally:
        runner.close()
        shutil.rmtree(base, ignore_errors=True)
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--kind", action="append", choices=KINDS, help="only these kinds (repeatable; default all)"
    )
    p.add_argument("--timeout", type=float, default=TIMEOUT)
    args = p.parse_args(argv)
    kinds = tuple(args.kind) if args.kind else KINDS
    counts, failures = fuzz(args.cases, args.seed, kinds, args.timeout, progress=True)
    print(f"cases: {args.cases}")
    print(f"succeeded: {counts['ok']}")
    print(f"clean errors: {counts['error']}")
    print(f"tracebacks: {counts['traceback']}")
    print(f"hangs: {counts['hang']}")
    print(f"files changed: {counts['files']}")
    print(f"unclean stderr: {counts['unclean']}")
    print(f"name round-trip failures: {counts['roundtrip']}")
    print(
        "by kind: "
        + ", ".join(f"{k[5:]}={v}" for k, v in sorted(counts.items()) if k.startswith("kind:"))
    )
    for case, verdict in failures[:20]:
        print(
            f"- {verdict.outcome}: {case.kind} {case.tool} {case.argv or case.call.get('fn')}"
            f" {case.note}: {verdict.detail}"
        )
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
