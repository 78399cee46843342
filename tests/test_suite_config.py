"""The suite's own configuration: hypothesis is derandomized unless asked otherwise,
and the mutation-testing configuration names files that exist."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent


def test_hypothesis_profile_is_derandomized_by_default():
    profile = os.environ.get("NEURON_IR_HYPOTHESIS", "ci")
    assert settings.default.derandomize == (profile != "random")
    if profile == "ci":
        assert settings.default.database is None


def test_mutation_config_names_existing_sources_and_tests():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mutmut = config["tool"]["mutmut"]
    for path in mutmut["source_paths"]:
        assert (ROOT / path).exists(), path
    for pattern in mutmut.get("only_mutate", []):
        assert list(ROOT.glob(pattern)), pattern
    extra = config["project"]["optional-dependencies"]["mutation"]
    assert any(req.startswith("mutmut") for req in extra)
    assert (ROOT / "tools" / "mutation.md").exists()
