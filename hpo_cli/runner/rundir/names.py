"""The name of every file a run directory holds (what each holds: :mod:`.directory`). Only the
run-directory package uses them; everything else asks a :class:`.directory.RunDirectory`."""

METRICS = "metrics.csv"
SOLVER_COMPARISON = "solver_comparison.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.previous.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"
LOCK = "run.lock"
TRACKING = "tracking.json"
HYDRA = ".hydra"
