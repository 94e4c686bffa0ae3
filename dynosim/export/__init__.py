"""`dynosim export FORMAT`: one model of the app (model.py), one writer module per format, each of the same
shape, `write(model, path) -> list[Path]` (the files it wrote) with its FORMAT and DEFAULT_PATH. Adding a
format is one module and one row in WRITERS."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from dynosim.export import compose, kubernetes, supervisord, swarm, systemd
from dynosim.export.model import AppModel

Writer = Callable[[AppModel, Path], list[Path]]

WRITERS: Mapping[str, Writer] = MappingProxyType(
    {
        "compose": compose.write,
        "swarm": swarm.write,
        "kubernetes": kubernetes.write,
        "systemd": systemd.write,
        "supervisord": supervisord.write,
    }
)
DEFAULT_PATHS: Mapping[str, str] = MappingProxyType(
    {module.FORMAT: module.DEFAULT_PATH for module in (compose, swarm, kubernetes, systemd, supervisord)}
)
FOLDERS = frozenset({"kubernetes", "systemd"})  # the formats that write a folder of files
# the formats that run the app on one host: nothing runs its add-ons there
HOST_FORMATS = frozenset({"systemd", "supervisord"})
