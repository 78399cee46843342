"""The runtime: compiled models, the artifact format, the simulated timeline, dynamic
batching (buckets and pipelined streaming join here)."""
