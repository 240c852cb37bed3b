"""hpo_cli/core: hypergradients, curvature products, solvers, unrolled differentiation,
JointOptimizer."""
