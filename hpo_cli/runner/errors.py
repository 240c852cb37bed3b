"""How ``hpo-run`` and ``hpo-hessian`` end on an error: one line on stderr, a meaningful exit code
(2: bad input, 1: a run that failed, 130: interrupted)."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

log = logging.getLogger("hpo_cli")


def fail(program: str, message: str, code: int) -> NoReturn:
    """Log ``message``, print ``<program>: error: <message>`` on stderr and exit with ``code``."""
    log.error(message)
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(code)
