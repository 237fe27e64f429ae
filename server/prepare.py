"""The one way a workflow becomes a prompt that may run, for every entry point (`POST /prompt`,
`POST /workflows/{name}/queue`, `fluxloom run`, remote workers' front ends): read either format
(a UI workflow is converted here, and kept as the PNG's `workflow`), apply `node.input`
overrides, run the prompt hooks and validate — once. What comes out is stored and executed as it
is; the worker does not validate again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodes.base import NodeEnv, NodeRegistry
from server.node_families import explain_unknown
from server.validation import DEFAULT_MAX_NODES, ValidatedPrompt, ValidationError, validate_prompt
from server.workflow_io import WorkflowError, apply_overrides, is_ui_format, to_api


@dataclass
class PreparedPrompt:
    validated: ValidatedPrompt
    extra_data: dict[str, Any] = field(default_factory=dict)  # client_id, extra_pnginfo.workflow

    @property
    def prompt(self) -> dict[str, Any]:
        return self.validated.prompt

    @property
    def warnings(self) -> list[str]:
        return self.validated.warnings

    @property
    def outputs(self) -> list[str]:
        return self.validated.outputs

    def plan(self) -> dict[str, Any]:
        """What is stored beside the prompt so that it runs without being validated again."""
        return {"order": self.validated.order, "warnings": self.validated.warnings}


def from_record(prompt: dict[str, Any], outputs: list[str], plan: dict[str, Any]) -> ValidatedPrompt:
    """A stored prepared prompt (see PreparedPrompt.plan), ready for Executor.execute."""
    return ValidatedPrompt(
        prompt=prompt, order=list(plan["order"]), outputs=list(outputs), warnings=list(plan["warnings"])
    )


def to_api_prompt(data: Any, registry: NodeRegistry, overrides: Any = None) -> dict[str, Any]:
    """An API prompt from a UI workflow, an API prompt or a saved `POST /prompt` body, with the
    overrides (`{"node-id-or-title.input": value}`) applied. Raises WorkflowError."""
    if overrides is not None and not isinstance(overrides, dict):
        raise WorkflowError('overrides ("set") must be an object of {"node.input": value}')
    try:
        prompt = to_api(data, registry)
        return apply_overrides(prompt, overrides, registry) if overrides else prompt
    except WorkflowError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:  # a hand-made file
        raise WorkflowError(f"{type(exc).__name__}: {exc}") from exc


def prepare_prompt(
    data: Any,
    registry: NodeRegistry,
    env: NodeEnv | None,
    *,
    overrides: Any = None,
    extra_data: dict[str, Any] | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> PreparedPrompt:
    """Convert, override and validate. Raises WorkflowError (the workflow cannot be read) or
    ValidationError (every error of the prompt, ComfyUI-shaped; `.prompt` is the API prompt it
    judged, so that reports can show node titles)."""
    extra = dict(extra_data or {})
    if is_ui_format(data):
        pnginfo = extra.get("extra_pnginfo") or {}
        if not isinstance(pnginfo, dict):
            raise WorkflowError("extra_data.extra_pnginfo must be an object")
        extra["extra_pnginfo"] = {"workflow": data, **pnginfo}
    prompt = to_api_prompt(data, registry, overrides)
    try:
        validated = validate_prompt(prompt, registry, env, max_nodes=max_nodes)
    except ValidationError as exc:
        exc.prompt = prompt
        explain_unknown_types(exc, registry, _ui_workflow(data, extra))
        raise
    return PreparedPrompt(validated, extra)


def _ui_workflow(data: Any, extra: dict[str, Any]) -> dict[str, Any] | None:
    """The UI workflow behind the prompt: the one given, or the one ComfyUI's frontend sends
    beside its API prompt (extra_data.extra_pnginfo.workflow), which says where nodes come from."""
    if is_ui_format(data):
        return data
    pnginfo = extra.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return workflow if is_ui_format(workflow) else None


def explain_unknown_types(
    exc: ValidationError, registry: NodeRegistry, workflow: dict[str, Any] | None
) -> None:
    """Say what each unknown node type is (a custom node pack's, an API node, a subgraph without
    its definition, a core ComfyUI node fluxloom lacks) and which nodes use it, in place of the
    validator's bare "does not exist". Only prompts that failed pay for this."""
    unknown = {
        nid
        for nid, entry in exc.node_errors.items()
        if any(e.get("type") == "missing_node_type" for e in entry.get("errors", []))
    }
    if not unknown or not isinstance(exc.prompt, dict):
        return
    prompt = {nid: node for nid, node in exc.prompt.items() if str(nid) in unknown}
    messages = explain_unknown(prompt, registry, workflow)
    for nid, message in messages.items():
        for error in exc.node_errors[str(nid)]["errors"]:
            if error.get("type") == "missing_node_type":
                # The sentence says all the bare "unknown class_type" details did.
                error.update(message=message, details="")
                error.setdefault("extra_info", {})["class_type"] = prompt[nid].get("class_type")
