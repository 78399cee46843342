"""Analyses of the IR: static shape rules, FLOP counts, the partition report, DOT export."""
