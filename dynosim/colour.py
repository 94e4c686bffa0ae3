"""Whether dynosim colours what it prints: only on a terminal, and never when NO_COLOR is set to
anything (https://no-color.org). `dynosim --no-color` sets NO_COLOR for the whole process, so the
log prefixes, the tables and rich's build output all follow the one switch."""

from __future__ import annotations

import os
from typing import TextIO

VARIABLE = "NO_COLOR"


def enabled(stream: TextIO) -> bool:
    return not os.environ.get(VARIABLE) and stream.isatty()


def disable() -> None:
    os.environ[VARIABLE] = "1"
