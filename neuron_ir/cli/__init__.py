"""Command-line mains (``neuron-opt``, ``neuron-run``)."""
