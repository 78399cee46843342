"""Helpers for the project's conformance runs (ONNX node tests through each level)."""
