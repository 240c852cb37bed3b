"""What the benchmarks share: the harness (sizes, timing, tables, reports), the machine, the
problems and data, the peers' adapters, the run behind solvers_in_the_loop and the sections of
hypergradient_cost. The entry points are the modules of benchmarks/ itself."""
