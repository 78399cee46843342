"""Command-line mains (``neuron-opt``, ``neuron-run``, ``neuron-sweep-batch``)."""
