"""The IFT maths: hypergradients, Hessian-vector products, inverse-HVP solvers, constraints.

Plain tensors and ``nn.Module``s only: nothing here imports Hydra, writes files or draws plots.
"""
