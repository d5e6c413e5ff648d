"""The benchmark: a torch-free harness (harness.py) that times the add-view step of any
object with the renderer interface, memory probes (memory.py) and report writers
(report.py). ``viewrt bench`` composes it with the PyTorch baselines of
viewrt.models.baselines."""

from viewrt.bench.harness import BenchConfig, parse_backends, parse_int_list, run_bench

__all__ = ["BenchConfig", "parse_backends", "parse_int_list", "run_bench"]
