"""How ``hpo-run`` and ``hpo-hessian`` refuse bad input (:class:`ConfigError`) and end on an
error: one line on stderr, a meaningful exit code (2: bad input, 1: a run that failed,
130: interrupted, 143: SIGTERM)."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

log = logging.getLogger("hpo_cli")


class ConfigError(ValueError):
    """Bad input (a configuration value out of range, a damaged or foreign file); the message
    names the key or the file in one line."""


def fail(program: str, message: str, code: int) -> NoReturn:
    """Print ``<program>: error: <message>`` on stderr and exit with ``code``; the message goes
    to the run's log file too (``hpo-run.log``, when Hydra has opened one), not to the console
    a second time."""
    log_to_files(message)
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(code)


def log_to_files(message: str) -> None:
    """``log.error(message)`` for the file handlers of ``log`` and its ancestors only."""
    if not log.isEnabledFor(logging.ERROR):
        return
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        logger = logger.parent if logger.propagate else None


def require(condition: bool, key: str, value: object, requirement: str) -> None:
    """Raise :class:`ConfigError` ``key=value is invalid: requirement`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key}={value} is invalid: {requirement}")
