"""xDSL dialect definitions of neuron-ir, one file a dialect."""
