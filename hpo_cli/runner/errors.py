"""How ``hpo-run`` and ``hpo-hessian`` refuse bad input (:class:`ConfigError`) and end on an
error: one line on stderr, a meaningful exit code (2: bad input, 1: a run that failed,
130: interrupted)."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

log = logging.getLogger("hpo_cli")


class ConfigError(ValueError):
    """Bad input (a configuration value out of range, a damaged or foreign file); the message
    names the key or the file in one line."""


def fail(program: str, message: str, code: int) -> NoReturn:
    """Log ``message``, print ``<program>: error: <message>`` on stderr and exit with ``code``."""
    log.error(message)
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(code)
