"""The interpreter (being split out of neuron_ir/interpreter.py); plan-time fusion."""
