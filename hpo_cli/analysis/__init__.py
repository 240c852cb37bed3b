"""Analysis built on the maths: Hessian spectra, rank and conditioning (:mod:`.hessian`), and
every solver's hypergradient against a dense solve (:mod:`.solver_comparison`). No Hydra, no
files."""
