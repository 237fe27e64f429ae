"""fluxloom never reaches a model hub: every model comes from a file or folder the user has.

- `enforce()` puts the Hugging Face libraries in offline mode for this process (the environment
  variables for child processes and libraries imported later; huggingface_hub's flag for those
  imported already). It is idempotent; call it once at start-up. The single-file loaders call it
  too, so that a library never tries the network on their behalf.
- `no_hub(what)` is a context manager around a library call that could look for files on a hub:
  the library's "offline" / "not found locally" errors become a `HubAccessError` that says what to
  put where, instead of a download attempt or a message about the Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import os
import sys

OFFLINE_VARIABLES = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_TELEMETRY",
)


class HubAccessError(RuntimeError):
    """Something asked for a model that is not on disk, which would have meant a download."""


def enforce() -> None:
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:  # read at call time by huggingface_hub, transformers and diffusers
        hub_constants.HF_HUB_OFFLINE = True
        hub_constants.HF_HUB_DISABLE_TELEMETRY = True
    diffusers_hub = sys.modules.get("diffusers.utils.hub_utils")
    if diffusers_hub is not None:  # diffusers copied the flags at import, for its telemetry
        diffusers_hub.HF_HUB_OFFLINE = True
        diffusers_hub.HF_HUB_DISABLE_TELEMETRY = True


def _is_hub_error(exc: BaseException) -> bool:
    """huggingface_hub's offline / not-cached errors, and transformers' and diffusers' OSError
    wrappers of them ("We couldn't connect to 'https://huggingface.co' ... cached files",
    "... does not appear to have a file named config.json")."""
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    if isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError):
        return True
    text = str(exc)
    return isinstance(exc, OSError) and any(
        sign in text for sign in ("huggingface.co", "cached files", "does not appear to have a file named")
    )


@contextlib.contextmanager
def no_hub(what: str, folder: str = "MODELS/text_encoders/"):
    """Run a library call that must only read local files; `what` names the model for the
    message, `folder` where the user should put it. (transformers 5 builds an *empty* tokenizer
    instead of failing when a tokenizer's files are missing: check a tokenizer's length.)"""
    enforce()
    try:
        yield
    except Exception as exc:
        if not _is_hub_error(exc):
            raise
        raise HubAccessError(
            f"fluxloom never downloads models, and {what} is not on disk: put the file under "
            f"{folder} (or point --models / --extra-model-paths at the folder that has it). "
            f"The library said: {exc}"
        ) from exc
