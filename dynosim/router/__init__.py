"""The HTTP router and its H-codes (Heroku's router in front of the web dynos)."""

from .server import Router
from .web import RouterTimeouts, WebDyno, WebFormation

__all__ = ["Router", "RouterTimeouts", "WebDyno", "WebFormation"]
