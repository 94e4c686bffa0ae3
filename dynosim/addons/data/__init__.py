"""An add-on's data as a whole: reset to its state after the release phase (`App.reset()`, the
`dynosim_clean` fixture), saved into a snapshot and loaded from one (`snapshot:save`, `snapshot:load`).

One module per service, every one the same shape (`Kind`), as `services/` is:

- `reset(ctx)`: back to the state after the release phase; what was done, in words.
- `save(ctx, folder)`: the data into files in `folder` (a snapshot's, being written under a temporary
  name); what `load` needs to know of it (a format, a server version), as JSON.
- `load(ctx, folder, meta)`: the data from those files into new data, swapped in only once whole
  (the current data untouched until then); what was done, in words. AddonError refuses, nothing changed.
- `capture(ctx)` (Postgres only: the others' baseline is "empty"): read the baseline after a release phase.

`Context` is what each is handed: the app's state folder, the attachment (its config vars: the URLs
the app uses) and its record in addons.json (ports, passwords), and `restart`, which stops and starts
the add-on's server where a load must (Redis reads its data only at start).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dynosim.addons import STATE_FILE, State
from dynosim.addons.catalogue import Attachment
from dynosim.addons.data import postgres, redis, search, smtp
from dynosim.addons.data.base import Context, Kind
from dynosim.errors import AddonError

KINDS: Mapping[str, Kind] = {"postgres": postgres.KIND, "redis": redis.KIND, "search": search.KIND, "smtp": smtp.KIND}


def context(state_dir: Path, attachment: Attachment, restart: Callable[[Callable[[], None]], None]) -> Context:
    for record in State.load(Path(state_dir) / STATE_FILE).records:
        if record.get("name") == attachment.name:
            return Context(Path(state_dir), attachment, record, restart)
    raise AddonError(f"no record of {attachment.name} in {Path(state_dir) / STATE_FILE}; restart the run")


def capture_baselines(contexts: Sequence[Context]) -> None:
    """What each add-on's reset returns to: read after a release phase, before dynos connect."""
    for ctx in contexts:
        capture = KINDS[ctx.attachment.service].capture
        if capture is not None:
            capture(ctx)


def reset_all(contexts: Sequence[Context]) -> dict[str, str]:
    """Every add-on reset, by name: what was done to it."""
    return {ctx.name: KINDS[ctx.attachment.service].reset(ctx) for ctx in contexts}


def close_sessions(attachments: Sequence[Attachment]) -> None:
    """What the data modules keep open for a run's add-ons (Postgres's psql sessions), closed as it stops."""
    postgres.close_sessions(a.name for a in attachments)
