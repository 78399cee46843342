"""``neuron-opt``: read ``.onnx`` or ``.mlir``, run a pass pipeline, print the IR.

Built on xDSL's opt main, with the project's dialects, frontends, passes and the
bit-exact printer. Every failure prints one ``error:`` line and exits non-zero,
and the output file is written only when everything succeeded.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import IO

from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError
from xdsl.xdsl_opt_main import xDSLOptMain

from ..errors import IRParseError, NeuronIRError
from ..importer import import_model
from ..ir import make_context, parse_ir, print_ir


class NeuronOptMain(xDSLOptMain):
    version_format = "neuron-opt (xdsl {xdsl_version})"

    def register_all_dialects(self) -> None:
        # Only the project's dialects, so that no other dialect named "onnx" can win.
        self.ctx = make_context()

    def register_all_frontends(self) -> None:
        def parse_mlir(stream: IO[bytes]) -> ModuleOp:
            try:
                text = stream.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise IRParseError(
                    f"not UTF-8 text (bad byte at offset {exc.start})", where=self.get_input_name()
                ) from None
            return parse_ir(text, source=self.get_input_name())

        def parse_onnx(stream: IO[bytes]) -> ModuleOp:
            # A path lets the importer resolve external data next to the model.
            if self.args.input_file is not None:
                return import_model(self.args.input_file)
            return import_model(stream.read())

        self.available_frontends["mlir"] = parse_mlir
        self.available_frontends["onnx"] = parse_onnx

    def register_all_passes(self) -> None:
        from passes import available_passes

        for name, factory in available_passes().items():
            self.register_pass(name, factory)

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.error = _usage_error  # type: ignore[method-assign]
        arg_parser.add_argument(
            "--elide-constants",
            nargs="?",
            type=int,
            const=16,
            default=None,
            metavar="N",
            help="print constants with more than N bytes (default 16) as "
            "dense_resource<__elided__>; the output no longer round-trips",
        )
        arg_parser.add_argument(
            "--list-passes", action="store_true", help="list the registered passes and exit"
        )
        arg_parser.add_argument(
            "--dot",
            metavar="FILE",
            default=None,
            help="also write the resulting graph as Graphviz DOT, coloured by placement",
        )

    failures: int = 0

    def run(self) -> None:
        """xDSL's loop, except that with --split-input-file a failing chunk reports its
        error and the next chunk still runs (as mlir-opt does)."""
        if not self.args.split_input_file:
            super().run()
            return
        chunks, file_extension = self.prepare_input()
        output = self.prepare_output()
        for index, (chunk, offset) in enumerate(chunks):
            try:
                if index > 0:
                    output.write("// -----\n")
                module = self.parse_chunk(chunk, file_extension, offset)
                if module is not None:
                    self.apply_passes(module)
                    output.write(self.output_resulting_program(module))
            except NeuronIRError as exc:
                self.failures += 1
                _error(exc.where or self.get_input_name(), exc.message)
            finally:
                chunk.close()

    def output_resulting_program(self, prog: ModuleOp) -> str:
        if self.args.dot:
            from ..analysis.dot import to_dot

            self.dot_text = to_dot(prog)
        return print_ir(
            prog, elide_constants_over=self.args.elide_constants, generic=self.args.print_op_generic
        )


class _KeptBuffer(io.StringIO):
    """xDSL's main closes its output stream; ours must stay readable afterwards."""

    def close(self) -> None:
        pass


def _list_passes() -> str:
    from passes import available_passes

    lines = []
    for name, factory in sorted(available_passes().items()):
        cls = factory()
        doc = (cls.__doc__ or "").strip().splitlines()
        lines.append(f"{name}: {doc[0] if doc else ''}".rstrip(": "))
    return "\n".join(lines) + "\n"


BUG_HINT = "this is a bug in neuron-ir; please report it with the command line and the input file"


def _usage_error(message: str) -> None:
    """argparse's error, as one ``error:`` line and exit code 1."""
    print(f"error: {' '.join(message.split())} (see neuron-opt --help)", file=sys.stderr)
    sys.exit(1)


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _error(where: str | None, message: str) -> int:
    message = " ".join(message.split())
    print(f"error: {where}: {message}" if where else f"error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-passes" in argv:
        sys.stdout.write(_list_passes())
        return 0
    where: str | None = None
    try:
        tool = NeuronOptMain(description=__doc__.splitlines()[0], args=argv)
        where = tool.args.input_file or "<stdin>"
        if tool.args.input_file is not None and not os.path.exists(tool.args.input_file):
            return _error(where, "no such file")
        if tool.args.input_file is not None and not os.path.isfile(tool.args.input_file):
            return _error(where, "not a regular file")
        for flag, out in (("-o", tool.args.output_file), ("--dot", tool.args.dot)):
            if out and tool.args.input_file and _same_file(out, tool.args.input_file):
                return _error(out, f"{flag} would overwrite the input file")
        buffer = _KeptBuffer()
        tool.prepare_output = lambda: buffer  # type: ignore[method-assign]
        tool.run()
        if tool.failures:
            return 1
        text = buffer.getvalue()
        dot_text = getattr(tool, "dot_text", None)
        if tool.args.dot and dot_text is not None:
            with open(tool.args.dot, "w") as f:
                f.write(dot_text)
        if tool.args.output_file:
            with open(tool.args.output_file, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    except NeuronIRError as exc:
        return _error(exc.where or where, exc.message)
    except ParseError as exc:
        return _error(
            where, str(exc).strip().splitlines()[-1] if str(exc).strip() else "parse error"
        )
    except DiagnosticException as exc:
        return _error(where, str(exc).strip().splitlines()[0])
    except ArgSpecParseError as exc:
        return _error(None, f"bad pass pipeline: {' '.join(str(exc).split())}")
    except ValueError as exc:
        # xDSL reports unknown passes and file extensions as ValueError
        return _error(where, str(exc))
    except OSError as exc:
        return _error(exc.filename or where, exc.strerror or str(exc))
    except UnicodeDecodeError:
        return _error(where, "not UTF-8 text (IR files are UTF-8)")
    except RecursionError:
        return _error(where, "the input nests too deeply")
    except MemoryError:
        return _error(where, "out of memory")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the tool promises no traceback
        # The one catch-all: anything that escaped the handlers above is a bug.
        text = " ".join(str(exc).split())[:300]
        return _error(where, f"internal error: {type(exc).__name__}: {text} ({BUG_HINT})")


if __name__ == "__main__":
    sys.exit(main())
