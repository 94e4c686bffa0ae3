"""dynosim's dashboard: the running app in a browser, as Heroku's Dashboard and its Metrics tab show it
(the formation, memory, response time, throughput and events on one time axis, the live logs, the
ephemeral ledger, releases, config vars, add-ons). `server.py` serves it on the supervisor's loop;
`static/` is the page, with uPlot vendored so it works offline."""

from .server import Dashboard

__all__ = ["Dashboard"]
