"""dynosim: run a Procfile app on one machine the way Heroku runs it."""

__version__ = "0.1.0"
