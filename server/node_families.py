"""What an unknown node type is, said in words: a node of a custom node pack, a ComfyUI API node, a
subgraph whose definition is missing, or a core ComfyUI node fluxloom does not implement yet.

ComfyUI's frontend saves where each node came from in its properties: `cnr_id` (the pack's id
in the Comfy Node Registry, "comfy-core" for ComfyUI's own nodes), `aux_id` ("github-user/repo"
for packs installed from GitHub) and `ver` (a version or a git commit). API nodes (paid cloud
services run through comfy.org, ComfyUI's comfy_api_nodes/) are core nodes too; their class
names start with the provider's name. A subgraph instance's type is its definition's UUID.

`explain_unknown(prompt, known, workflow)` gives the validator one message per node;
`describe_unknown(class_type, ui_nodes)` the message for one type."""

from __future__ import annotations

import difflib
import re
from collections.abc import Container, Iterable, Sequence
from typing import Any

from server.subgraphs import subgraph_definitions

CORE_PACK = "comfy-core"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
SEMVER = re.compile(r"^v?\d+(\.\d+)*([-+][\w.]+)?$")
GIT_HASH = re.compile(r"^[0-9a-f]{7,40}$", re.IGNORECASE)

# Class-name prefix → provider, for ComfyUI's API nodes (one module per provider in
# comfy_api_nodes/). Prefixes that no core node shares:
API_PROVIDERS = {
    "Anthropic": "Anthropic",
    "Beeble": "Beeble",
    "Bria": "Bria",
    "ByteDance": "ByteDance",
    "Claude": "Anthropic",
    "Clarity": "Clarity AI",
    "ElevenLabs": "ElevenLabs",
    "FishAudio": "Fish Audio",
    "Gemini": "Google",
    "Grok": "xAI",
    "HappyHorse": "HappyHorse",
    "HeyGen": "HeyGen",
    "HitPaw": "HitPaw",
    "Kling": "Kling",
    "Luma": "Luma AI",
    "Magnific": "Magnific",
    "Meshy": "Meshy",
    "MetaMuse": "Meta",
    "Mirelo": "Mirelo",
    "Moonvalley": "Moonvalley",
    "OpenAI": "OpenAI",
    "OpenRouter": "OpenRouter",
    "Pika": "Pika",
    "Pixverse": "PixVerse",
    "Pruna": "Pruna AI",
    "Quiver": "Quiver",
    "Recraft": "Recraft",
    "Reve": "Reve",
    "Rodin3D": "Rodin (Hyper3D)",
    "Runway": "Runway",
    "Sonilo": "Sonilo",
    "Stability": "Stability AI",
    "SyncLipSync": "Sync",
    "SyncTalking": "Sync",
    "Tencent": "Tencent",
    "Topaz": "Topaz Labs",
    "Veed": "VEED",
    "Veo": "Google",
    "Vidu": "Vidu",
    "Wavespeed": "WaveSpeed",
}
# Prefixes that core nodes share too (FluxGuidance, WanImageToVideo, ...): only the API nodes'
# naming ("...Node", "...NodeV2", "...V4", "...Api", "...Api25...") counts.
API_PROVIDERS_BY_PATTERN = {
    "Flux": "Black Forest Labs",
    "Hunyuan": "Tencent",
    "Ideogram": "Ideogram",
    "Krea": "Krea",
    "Ltx": "Lightricks",
    "Minimax": "MiniMax",
    "Qwen": "Alibaba",
    "Tripo": "Tripo",
    "Wan": "Alibaba",
}
API_NAMING = re.compile(r"(Node(V\d+)?|Api|V\d+)$|Api\d")
# API nodes named against their provider's pattern.
API_NODES = {"IdeogramPImage": "Ideogram"}


def api_provider(class_type: str) -> str | None:
    """The provider behind a ComfyUI API node type, or None when the name is not an API node's."""
    if class_type in API_NODES:
        return API_NODES[class_type]
    for prefix, provider in API_PROVIDERS.items():
        if class_type.startswith(prefix):
            return provider
    for prefix, provider in API_PROVIDERS_BY_PATTERN.items():
        if class_type.startswith(prefix) and API_NAMING.search(class_type):
            return provider
    return None


def describe_unknown(
    class_type: str,
    ui_nodes: Sequence[dict[str, Any]] = (),
    node_ids: Sequence[str] | None = None,
    known: Iterable[str] = (),
) -> str:
    """One sentence on an unknown node type and the nodes that use it.

    `ui_nodes`: the UI-format nodes of that type (their properties tell where they come from);
    `node_ids`: the ids to name (default: those of `ui_nodes`); `known`: the types fluxloom has,
    for a "did you mean" when nothing else is known."""
    ids = list(node_ids) if node_ids is not None else [str(n.get("id")) for n in ui_nodes if "id" in n]
    where = _nodes_phrase(ids, ui_nodes)
    head = f"Node type '{class_type}'"
    props = [n.get("properties") for n in ui_nodes if isinstance(n.get("properties"), dict)]
    pack = next((p for p in props if p.get("cnr_id") not in (None, CORE_PACK) or p.get("aux_id")), None)
    core = next((p for p in props if p.get("cnr_id") == CORE_PACK), None)
    if UUID.match(class_type):
        return (
            f"{head} is a subgraph whose definition is missing from the workflow (its "
            f"'definitions.subgraphs' has no entry with that id); save the workflow again from "
            f"ComfyUI with the subgraph included{where}"
        )
    if pack is not None:
        return f"{head} is from the custom node pack {_pack_name(pack)}, which fluxloom does not have{where}"
    provider = api_provider(class_type)
    if provider is not None:
        return (
            f"{head} is a ComfyUI API node (a paid cloud service of {provider}, run through "
            f"comfy.org), which fluxloom does not run{where}"
        )
    if core is not None:
        version = _version(core.get("ver"))
        return (
            f"{head} is a core ComfyUI node{f' ({CORE_PACK} {version})' if version else ''} "
            f"that fluxloom does not implement yet{where}"
        )
    close = difflib.get_close_matches(class_type, sorted(known), n=1, cutoff=0.8)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{head} does not exist{hint}{where}"


def explain_unknown(
    prompt: dict[str, Any], known: Container[str], workflow: dict[str, Any] | None = None
) -> dict[str, str]:
    """Node id → message, for every node of an API prompt whose class_type is not in `known`.
    `workflow`, the UI workflow the prompt came from (if any), tells where the types come from."""
    by_type: dict[str, list[str]] = {}
    for nid, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if isinstance(class_type, str) and class_type not in known:
            by_type.setdefault(class_type, []).append(str(nid))
    ui_nodes = ui_nodes_by_type(workflow) if isinstance(workflow, dict) else {}
    # A NodeRegistry iterates over its declarations; a set or list, over names.
    known_names = [getattr(k, "class_type", k) for k in known] if isinstance(known, Iterable) else []
    messages: dict[str, str] = {}
    for class_type, ids in by_type.items():
        message = describe_unknown(class_type, ui_nodes.get(class_type, []), _sorted(ids), known_names)
        messages.update(dict.fromkeys(ids, message))
    return messages


def ui_nodes_by_type(workflow: dict[str, Any]) -> dict[str, list[dict]]:
    """The UI nodes of a workflow and of all its subgraph definitions, by type."""
    found: dict[str, list[dict]] = {}
    for graph in (workflow, *subgraph_definitions(workflow).values()):
        for node in graph.get("nodes") or []:
            if isinstance(node, dict) and isinstance(node.get("type"), str):
                found.setdefault(node["type"], []).append(node)
    return found


def _pack_name(props: dict[str, Any]) -> str:
    version = _version(props.get("ver"))
    if props.get("cnr_id") not in (None, CORE_PACK):
        return f"'{props['cnr_id']}'" + (f" ({version})" if version else "")
    # aux_id: a pack installed from GitHub, not from the Comfy Node Registry.
    return f"'{props['aux_id']}' (from GitHub{', ' + version if version else ''})"


def _version(ver: Any) -> str:
    if not isinstance(ver, str) or not ver or ver == "unknown":
        return ""
    if GIT_HASH.match(ver) and not ver.isdigit():
        return f"commit {ver[:7]}"
    if SEMVER.match(ver):
        return ver if ver.startswith("v") else f"v{ver}"
    return ver


def _sorted(ids: Iterable[str]) -> list[str]:
    def key(nid: str) -> tuple:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in nid.split(":"))

    return sorted(ids, key=key)


def _nodes_phrase(ids: Sequence[str], ui_nodes: Sequence[dict[str, Any]]) -> str:
    if not ids:
        return ""
    titles = {str(n.get("id")): n.get("title") for n in ui_nodes if isinstance(n.get("title"), str)}
    named = [f"{nid} ('{titles[nid]}')" if titles.get(nid) else nid for nid in _sorted(ids)]
    return f"; node{'s' if len(named) > 1 else ''} {', '.join(named)}"
