"""The `dynosim` commands of the platform's concepts, one module per concept and named for it (ps:*,
logs, config:*, releases and deploy, maintenance:*, certs, scheduler:*), with Heroku's command names. Each parses,
calls the concept's module, prints; cli.py's lazy table loads a module only when one of its commands
runs. The add-on and doctor commands live in their own packages (addons/commands.py, doctor/command.py).
"""
