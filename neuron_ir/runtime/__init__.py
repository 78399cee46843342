"""The runtime: compiled models, the artifact format, the simulated timeline."""
