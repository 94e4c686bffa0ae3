"""The HTTP router and its H-codes (Heroku's router in front of the web dynos)."""
from .server import Backend, Formation, Router, RouterTimeouts

__all__ = ["Backend", "Formation", "Router", "RouterTimeouts"]
