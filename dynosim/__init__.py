"""dynosim: run a Procfile app on one machine the way Heroku runs it.

The Python API (`dynosim.App`) is imported on first use, so `dynosim --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["App", "DynosimError", "__version__"]

if TYPE_CHECKING:
    from .api import App
    from .errors import DynosimError


def __getattr__(name: str) -> Any:
    if name == "App":
        from .api import App

        return App
    if name == "DynosimError":
        from .errors import DynosimError

        return DynosimError
    raise AttributeError(name)
