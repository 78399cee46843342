"""The deployment runtime: what runs a compiled model for a client (dynamic batching;
buckets and pipelined streaming join here)."""
