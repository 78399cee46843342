# lit configuration: FileCheck tests of neuron-opt and the passes.
import os
import sys

import lit.formats

config.name = "neuron-ir"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["Inputs", "lit.cfg.py"]

# The tools come from the environment that runs lit (the project's venv).
config.environment["PATH"] = os.environ.get("PATH", "")
for var in ("PYTHONPATH", "HOME", "TMPDIR"):
    if var in os.environ:
        config.environment[var] = os.environ[var]
config.environment["PYTHONWARNINGS"] = "error::DeprecationWarning"

python = sys.executable
config.substitutions.append(("%python", python))
config.substitutions.append(("%make_onnx", f"{python} {os.path.join(config.test_source_root, 'Inputs', 'make_onnx.py')}"))
