"""Which web frontend `fluxloom serve` serves, and the frontend extensions it lists.

- `--frontend fluxloom` (default): our own canvas, `web/`.
- `--frontend comfyui`: the official ComfyUI frontend, the static site inside the
  `comfyui-frontend-package` wheel (the optional extra `fluxloom[comfyui]`, pinned below).

Either way the server lists frontend extensions at `/api/extensions` and serves them under
`/extensions/<name>/...`, as ComfyUI does for custom nodes' `WEB_DIRECTORY`: fluxloom's own
extension (`web/ext`, name `fluxloom`) and the web directory of every custom node module loaded
through `FLUXLOOM_EXTRA_NODES` that declares one.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from aiohttp import web

from server.paths import web_dir

log = logging.getLogger("fluxloom.frontend")

FRONTENDS = ("fluxloom", "comfyui")

COMFYUI_PACKAGE = "comfyui-frontend-package"
COMFYUI_MODULE = "comfyui_frontend_package"
COMFYUI_VERSION = "1.58.1"  # the version the routes and tests were checked against; pyproject pins it
INSTALL_HINT = f"pip install 'fluxloom[comfyui]' (or pip install {COMFYUI_PACKAGE}=={COMFYUI_VERSION})"


def fluxloom_extension_dir() -> Path:
    """fluxloom's own extension for the official frontend (`web/ext`), served as `fluxloom`."""
    return web_dir() / "ext"


class FrontendNotInstalled(RuntimeError):
    """`--frontend comfyui` without the package installed."""


def comfyui_static_dir() -> Path:
    """The official frontend's static site (its `index.html` and assets)."""
    try:
        module = __import__(COMFYUI_MODULE)
    except ImportError:
        raise FrontendNotInstalled(
            f"the official ComfyUI frontend is not installed: {INSTALL_HINT}; "
            "or run with --frontend fluxloom (the default)"
        ) from None
    static = Path(module.__file__).resolve().parent / "static"
    if not (static / "index.html").is_file():
        raise FrontendNotInstalled(
            f"{COMFYUI_PACKAGE} at {static.parent} has no static/index.html: {INSTALL_HINT}"
        )
    try:
        version = metadata.version(COMFYUI_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    if version != COMFYUI_VERSION:
        # Newer frontends call routes this server may not know yet: say so, but still serve it.
        log.warning(
            "%s %s is installed; fluxloom is tested with %s (%s)",
            COMFYUI_PACKAGE,
            version,
            COMFYUI_VERSION,
            INSTALL_HINT,
        )
    return static


def web_directories(module_names: list[str]) -> dict[str, Path]:
    """`WEB_DIRECTORY` of each loaded custom node module, resolved against the module's folder
    (ComfyUI's convention), by module name. A module without one is skipped; a declared folder
    that does not exist is logged and skipped."""
    found: dict[str, Path] = {}
    for name in module_names:
        module = sys.modules.get(name)
        declared = getattr(module, "WEB_DIRECTORY", None) if module is not None else None
        if not declared or getattr(module, "__file__", None) is None:
            continue
        folder = (Path(module.__file__).resolve().parent / str(declared)).resolve()
        if not folder.is_dir():
            log.warning("custom nodes %s: WEB_DIRECTORY %s is not a folder; not served", name, folder)
            continue
        found[name] = folder
    return found


@dataclass
class FrontendState:
    """What the frontend routes need besides the AppState: the extension folders and the
    per-user data folder (settings, userdata)."""

    data_dir: Path
    workflows_dir: Path
    extension_dirs: dict[str, Path] = field(default_factory=dict)
    # Settings arrive one POST per setting, several at once: their read-modify-write is serialised.
    settings_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Websocket client ids that asked for the server's log lines (the frontend's Console panel).
    log_subscribers: set[str] = field(default_factory=set)

    @property
    def user_dir(self) -> Path:
        """Single-user mode: ComfyUI's `user/default`."""
        return self.data_dir / "user" / "default"

    def create_folders(self) -> None:
        """The user's folders the frontend lists: saved workflows, subgraph blueprints and
        keybinding presets (ComfyUI answers 404 until the first one is saved)."""
        for folder in (self.workflows_dir, self.user_dir / "subgraphs", self.user_dir / "keybindings"):
            folder.mkdir(parents=True, exist_ok=True)

    def extension_urls(self) -> list[str]:
        """Every `.js` file of every extension folder, as `/extensions/<name>/<path>`."""
        urls = []
        for name, folder in self.extension_dirs.items():
            for path in sorted(folder.rglob("*.js")):
                if path.is_file() and not path.is_symlink():
                    urls.append(f"/extensions/{name}/{path.relative_to(folder).as_posix()}")
        return urls


FRONTEND = web.AppKey("fluxloom_frontend", FrontendState)


def frontend_state(request: web.Request) -> FrontendState:
    return request.app[FRONTEND]
