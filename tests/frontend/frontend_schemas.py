"""The payload shapes the official frontend (comfyui-frontend-package 1.58.1) requires of the
routes it calls, recorded from its zod schemas and TypeScript types (the package ships them in
its source maps): field → (kind, required, nullable). `check()` says what a payload breaks.

`recorded_fields_still_required()` reads the installed package's own schema source so that a new
frontend version which changes these shapes fails a test instead of breaking the page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REQ, OPT = True, False
JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")

# src/platform/remote/comfyui/jobs/jobTypes.ts (zExecutionError, zPreviewOutput, zRawJobListItem,
# zJobDetail, zJobsListResponse): .passthrough() objects, so extra fields are allowed.
EXECUTION_ERROR = {
    "node_id": (str, REQ, False),
    "node_type": (str, REQ, False),
    "exception_message": (str, REQ, False),
    "exception_type": (str, REQ, False),
    "traceback": ([str], REQ, False),
    "prompt_id": (str, OPT, False),
    "timestamp": (float, OPT, False),
    "executed": ([str], OPT, False),
}
PREVIEW_OUTPUT = {
    "nodeId": (str, REQ, False),
    "mediaType": (str, REQ, False),
    "filename": (str, OPT, False),
    "subfolder": (str, OPT, False),
    "type": (("input", "output", "temp"), OPT, False),
}
JOB = {
    "id": (str, REQ, False),
    "status": (JOB_STATUSES, REQ, False),
    "create_time": (float, REQ, False),
    "outputs_count": (int, REQ, True),
    "previewable_outputs_count": (int, REQ, True),
    "execution_start_time": (float, OPT, True),
    "execution_end_time": (float, OPT, True),
    "preview_output": (PREVIEW_OUTPUT, OPT, True),
    "execution_error": (EXECUTION_ERROR, OPT, True),
    "workflow_id": (str, OPT, True),
    "priority": (float, OPT, False),
}
JOB_DETAIL = {**JOB, "workflow": (object, OPT, False), "outputs": (dict, OPT, False)}
JOBS_LIST = {
    "jobs": ([JOB], REQ, False),
    "pagination": (
        {
            "offset": (float, REQ, False),
            "limit": (float, REQ, False),
            "total": (float, REQ, False),
            "has_more": (bool, REQ, False),
        },
        REQ,
        False,
    ),
}
# packages/ingest-types zod.gen.ts: zGetExtensionsResponse, zGetEmbeddingsResponse = z.array(z.string()).
STRINGS = [str]
# src/scripts/api.ts UserDataFullInfo (listUserDataFullInfo) and the v2 listing.
USERDATA_FULL_INFO = {
    "path": (str, REQ, False),
    "size": (int, REQ, False),
    "modified": (float, REQ, False),
    "created": (float, OPT, False),
}
# src/platform/workflow/templates/types/template.ts WorkflowTemplates / TemplateInfo.
TEMPLATE_INFO = {
    "name": (str, REQ, False),
    "mediaType": (str, REQ, False),
    "mediaSubtype": (str, REQ, False),
    "description": (str, REQ, False),
    "title": (str, OPT, False),
    "tags": ([str], OPT, False),
    "models": ([str], OPT, False),
    "date": (str, OPT, False),
}
TEMPLATE_INDEX = [
    {
        "moduleName": (str, REQ, False),
        "title": (str, REQ, False),
        "templates": ([TEMPLATE_INFO], REQ, False),
        "category": (str, OPT, False),
        "type": (str, OPT, False),
    }
]
# The model library (src/platform/models): /experiment/models and /experiment/models/{folder}.
MODEL_FOLDER = {"name": (str, REQ, False), "folders": ([str], REQ, False)}
MODEL_FILE = {"name": (str, REQ, False), "pathIndex": (int, REQ, False)}


def check(value: Any, spec: Any, where: str = "$") -> list[str]:
    """Everything in `value` that the recorded `spec` refuses, as readable lines."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        problems = []
        for name, (kind, required, nullable) in spec.items():
            if name not in value:
                if required:
                    problems.append(f"{where}.{name}: missing")
                continue
            if value[name] is None:
                if not nullable:
                    problems.append(f"{where}.{name}: null")
                continue
            problems += check(value[name], kind, f"{where}.{name}")
        return problems
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in check(item, spec[0], f"{where}[{i}]")]
    if isinstance(spec, tuple):
        return [] if value in spec else [f"{where}: {value!r} not one of {spec}"]
    if spec is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif spec is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec is object:
        ok = True
    else:
        ok = isinstance(value, spec)
    return [] if ok else [f"{where}: expected {spec.__name__}, got {value!r}"]


def _schema_source(static: Path, source: str) -> str:
    """The TypeScript source of one of the frontend's files, from its shipped source maps."""
    for map_file in sorted((static / "assets").glob("*.js.map")):
        raw = map_file.read_bytes()
        if source.encode() not in raw:
            continue
        data = json.loads(raw)
        for name, text in zip(data.get("sources", []), data.get("sourcesContent") or [], strict=False):
            if name.endswith(source) and text:
                return text
    raise LookupError(f"{source} is not in the source maps under {static}")


def zod_object_fields(static: Path, source: str, const: str) -> dict[str, bool]:
    """`const X = z.object({...})` of a frontend source file → {field: required}."""
    text = _schema_source(static, source)
    start = text.index(f"const {const} = z")
    body = text[text.index("{", start) + 1 :]
    depth, end = 1, 0
    while depth:
        depth += {"{": 1, "}": -1}.get(body[end], 0)
        end += 1
    fields: dict[str, bool] = {}
    for line in re.split(r",\s*\n", body[: end - 1]):
        match = re.match(r"\s*(?://[^\n]*\n\s*)*(\w+):\s*(.*)", line, re.S)
        if match:
            fields[match.group(1)] = ".optional()" not in match.group(2) and ".nullish()" not in match.group(
                2
            )
    return fields
