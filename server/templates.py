"""fluxloom's shipped workflows (`workflows/*.json`, UI format) as the official frontend's
templates: the `templates/index.json` entry of each, and a thumbnail drawn from the workflow
itself (its groups, nodes and links, as a minimap), so a template's picture is always the graph
it opens."""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from server.workflow_io import is_ui_format, shipped_workflows

MODULE = "default"  # the frontend's name for the core templates (served from /templates/)
THUMB_SIZE = (512, 384)
BACKGROUND = (32, 32, 34)
NODE_FILL = (53, 53, 58)
NODE_TITLE = (70, 70, 78)
LINK = (150, 150, 160)
TEXT = (225, 225, 230)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if is_ui_format(data) else None


def template_workflows() -> dict[str, Path]:
    """Shipped workflows the frontend can open as a graph (UI format only)."""
    return {name: path for name, path in shipped_workflows().items() if _read(path) is not None}


def _widgets(workflow: dict[str, Any], node_type: str) -> list[Any]:
    for node in workflow.get("nodes", []):
        if isinstance(node, dict) and node.get("type") == node_type:
            return list(node.get("widgets_values") or [])
    return []


def describe(workflow: dict[str, Any]) -> str:
    """One line from the graph itself: its size, resolution, steps and phases."""
    parts = [f"{len(workflow.get('nodes', []))} nodes"]
    latent = _widgets(workflow, "EmptyLatent16ch")
    if len(latent) >= 2:
        parts.append(f"{latent[0]}×{latent[1]}")
    sampler = _widgets(workflow, "FluxSampler")
    if len(sampler) >= 3 and isinstance(sampler[2], int):
        parts.append(f"{sampler[2]} steps")
    if any(isinstance(n, dict) and n.get("type") == "LoadImage" for n in workflow.get("nodes", [])):
        parts.append("image to image")
    groups = [g.get("title") for g in workflow.get("groups") or [] if isinstance(g, dict) and g.get("title")]
    if groups:
        parts.append("groups: " + ", ".join(groups))
    return " · ".join(parts)


def index() -> list[dict[str, Any]]:
    """`templates/index.json`: one category holding every shipped workflow."""
    templates = []
    for name, path in template_workflows().items():
        workflow = _read(path) or {}
        templates.append(
            {
                "name": name,
                "title": name,
                "description": describe(workflow),
                "mediaType": "image",
                "mediaSubtype": "png",
                "tags": ["FLUX", "fluxloom"],
                "models": ["FLUX.1"],
                "openSource": True,
                "date": _date(path),
            }
        )
    return [
        {
            "moduleName": MODULE,
            "title": "fluxloom workflows",
            "category": "fluxloom",
            "type": "image",
            "isEssential": True,
            "templates": templates,
        }
    ]


def _date(path: Path) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d")


def _pair(value: Any, default: tuple[float, float]) -> tuple[float, float]:
    """litegraph stores pos/size as [x, y] or {"0": x, "1": y}."""
    if isinstance(value, dict):
        value = [value.get("0", default[0]), value.get("1", default[1])]
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return default


def _colour(text: Any, default: tuple[int, int, int]) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        return ImageColor.getrgb(text)[:3] if isinstance(text, str) else default
    except ValueError:
        return default


def thumbnail(name: str) -> bytes | None:
    """The PNG thumbnail of a shipped workflow, or None when there is no such template."""
    path = template_workflows().get(name)
    if path is None:
        return None
    return _thumbnail(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=32)
def _thumbnail(path: str, mtime_ns: int) -> bytes:  # mtime in the key: an edited file redraws
    from PIL import Image, ImageDraw

    workflow = _read(Path(path)) or {"nodes": [], "groups": []}
    boxes = _boxes(workflow)
    img = Image.new("RGB", THUMB_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(img)
    if boxes:
        to_px = _fit([b for b, _ in boxes.values()] + _group_boxes(workflow))
        _draw_groups(draw, workflow, to_px)
        _draw_links(draw, workflow, boxes, to_px)
        _draw_nodes(draw, boxes, to_px)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _boxes(workflow: dict[str, Any]) -> dict[Any, tuple[tuple[float, float, float, float], dict]]:
    boxes = {}
    for node in workflow.get("nodes", []):
        if not isinstance(node, dict) or "id" not in node:
            continue
        x, y = _pair(node.get("pos"), (0.0, 0.0))
        w, h = _pair(node.get("size"), (200.0, 80.0))
        boxes[node["id"]] = ((x, y - 30, x + w, y + h), node)  # litegraph draws the title above pos
    return boxes


def _group_boxes(workflow: dict[str, Any]) -> list[tuple[float, float, float, float]]:
    out = []
    for g in workflow.get("groups") or []:
        b = g.get("bounding") if isinstance(g, dict) else None
        if isinstance(b, list) and len(b) == 4:
            out.append((float(b[0]), float(b[1]), float(b[0]) + float(b[2]), float(b[1]) + float(b[3])))
    return out


def _fit(boxes: list[tuple[float, float, float, float]]):
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[2] for b in boxes), max(b[3] for b in boxes)
    margin = 12
    scale = min(
        (THUMB_SIZE[0] - 2 * margin) / max(right - left, 1),
        (THUMB_SIZE[1] - 2 * margin) / max(bottom - top, 1),
    )
    dx = (THUMB_SIZE[0] - (right - left) * scale) / 2
    dy = (THUMB_SIZE[1] - (bottom - top) * scale) / 2

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x - left) * scale + dx, (y - top) * scale + dy

    return to_px


def _draw_groups(draw, workflow: dict[str, Any], to_px) -> None:
    groups = [g for g in workflow.get("groups") or [] if isinstance(g, dict)]
    for g, box in zip(groups, _group_boxes(workflow), strict=False):
        colour = _colour(g.get("color"), (90, 110, 140))
        a, b = to_px(box[0], box[1]), to_px(box[2], box[3])
        fill = tuple(int(c * 0.45 + BACKGROUND[i] * 0.55) for i, c in enumerate(colour))
        draw.rounded_rectangle([a, b], radius=6, fill=fill, outline=colour, width=2)
        draw.text((a[0] + 8, a[1] + 6), str(g.get("title", "")), fill=TEXT)


def _draw_links(draw, workflow: dict[str, Any], boxes, to_px) -> None:
    for link in workflow.get("links") or []:
        if isinstance(link, list) and len(link) >= 5:
            origin, target = link[1], link[3]
        elif isinstance(link, dict):
            origin, target = link.get("origin_id"), link.get("target_id")
        else:
            continue
        if origin in boxes and target in boxes:
            (ox0, oy0, ox1, oy1), _ = boxes[origin]
            (tx0, ty0, tx1, ty1), _ = boxes[target]
            draw.line([to_px(ox1, (oy0 + oy1) / 2), to_px(tx0, (ty0 + ty1) / 2)], fill=LINK, width=2)


def _draw_nodes(draw, boxes, to_px) -> None:
    for (x0, y0, x1, y1), node in boxes.values():
        a, b = to_px(x0, y0), to_px(x1, y1)
        title_bottom = min(b[1], a[1] + 14)
        draw.rounded_rectangle(
            [a, b], radius=4, fill=_colour(node.get("bgcolor"), NODE_FILL), outline=(20, 20, 22)
        )
        draw.rectangle([a, (b[0], title_bottom)], fill=_colour(node.get("color"), NODE_TITLE))
        title = str(node.get("title") or node.get("type") or "")
        width = max(int((b[0] - a[0]) / 6), 3)
        draw.text((a[0] + 3, a[1] + 2), title[:width], fill=TEXT)
