"""Prefect Secret blocks, read where a setting names one (``BULLETIN_*_BLOCK``): the SMTP password, the SFTP private
key, the token signing keyset, an inbound trigger's secret.

Prefect is imported when a block is read, not before: modules that only might read one, and their tests, never pay
for it. What the block holds is never put into an error message.
"""

from __future__ import annotations

from typing import Any

from bulletin.errors import ConfigError, TransientError


def read_secret_block(name: str, *, holding: str | None = None) -> Any:
    """The value of the Prefect Secret block ``name`` (a string, or the JSON object it was saved as).

    ConfigError when there is no such block; TransientError when Prefect cannot be reached (a retry may help).
    ``holding`` says what the block should hold, for the message ("the SMTP password")."""
    import httpx
    from prefect.blocks.system import Secret
    from prefect.exceptions import PrefectException

    what = f" holding {holding}" if holding else ""
    try:
        # Block.load is async-dispatched: inside an event loop it would return a coroutine unless told `_sync`.
        load: Any = Secret.load
        return load(name, _sync=True).get()
    except (ValueError, PrefectException) as exc:
        raise ConfigError(f"cannot load the Prefect Secret block {name!r}{what}") from exc
    except (OSError, httpx.TransportError) as exc:  # Prefect's client raises httpx's errors, which are not OSErrors
        raise TransientError(f"cannot reach Prefect to load the Secret block {name!r}") from exc
