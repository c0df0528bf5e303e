"""Composition of the stages: config, io, run, stats, report, cli."""
