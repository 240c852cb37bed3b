"""What the tests share: tiny-run overrides, in-process commands, composed configurations,
tiny data files, a researcher's own package and a W&B run-file reader."""
