"""Tests written to kill mutants that survived tools/mutation.md runs (listed in\ntests/mutation_survivors.txt)."""
