"""The HTTP router and its H-codes (Heroku's router in front of the web dynos)."""
from .server import Router
from .web import Backend, Formation, RouterTimeouts

__all__ = ["Backend", "Formation", "Router", "RouterTimeouts"]
