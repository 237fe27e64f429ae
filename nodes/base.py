"""Node declaration API: one typed declaration per node type, checked when it is registered.

A node is a plain function decorated with `@registry.node(...)`. The declaration names its
class_type, category, inputs (sockets or widgets) and outputs; the same object renders the
ComfyUI-compatible `/object_info` entry, drives validation in `server.validation`, and is what the
canvas draws. The run function receives a `NodeContext` first, then its inputs as keyword
arguments, and returns a tuple with one value per output (or a `NodeResult` when it also has
something to show in the UI).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Socket types carry values between nodes; widget types are edited on the node itself but can
# also be fed by a link of the same type (as in ComfyUI).
SOCKET_TYPES = frozenset({"CLIP", "T5", "FLUX_MODEL", "VAE", "CONDITIONING", "LATENT", "IMAGE", "*"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MAX_SEED = 2**64 - 1


class DeclarationError(TypeError):
    """A node declaration does not match its run function or is malformed."""


class Interrupted(Exception):
    """Raised inside a node when the user interrupted the prompt."""


# --- widget specs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Int:
    default: int = 0
    min: int = -(2**63)
    max: int = 2**63 - 1
    step: int = 1
    # Seeds get ComfyUI's fixed/increment/decrement/randomize control, stored as an extra
    # value after the widget in `widgets_values`.
    control_after_generate: bool = False
    type = "INT"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default, "min": self.min, "max": self.max}
        opts["step"] = self.step
        if self.control_after_generate:
            opts["control_after_generate"] = True
        return opts


@dataclass(frozen=True)
class Float:
    default: float = 0.0
    min: float = -1e9
    max: float = 1e9
    step: float = 0.01
    round: float | None = None
    type = "FLOAT"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default, "min": self.min, "max": self.max}
        opts["step"] = self.step
        if self.round is not None:
            opts["round"] = self.round
        return opts


@dataclass(frozen=True)
class String:
    default: str = ""
    multiline: bool = False
    placeholder: str = ""
    type = "STRING"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default, "multiline": self.multiline}
        if self.placeholder:
            opts["placeholder"] = self.placeholder
        return opts


@dataclass(frozen=True)
class Boolean:
    default: bool = False
    label_on: str = "true"
    label_off: str = "false"
    type = "BOOLEAN"

    def options(self) -> dict[str, Any]:
        return {"default": self.default, "label_on": self.label_on, "label_off": self.label_off}


@dataclass(frozen=True)
class Combo:
    """A choice among strings. `choices` may be a callable of the `NodeEnv` for lists that
    depend on the machine (models found, input images)."""

    choices: Sequence[str] | Callable[[NodeEnv], Sequence[str]] = ()
    default: str | None = None
    image_upload: bool = False
    type = "COMBO"

    def resolve(self, env: NodeEnv | None) -> list[str]:
        if callable(self.choices):
            return list(self.choices(env)) if env is not None else []
        return list(self.choices)

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.default is not None:
            opts["default"] = self.default
        if self.image_upload:
            opts["image_upload"] = True
        return opts


Widget = Int | Float | String | Boolean | Combo


@dataclass(frozen=True)
class Socket:
    """An input that only takes a link. `type` may be several types joined by commas
    (e.g. "CLIP,T5,FLUX_MODEL,VAE"), or "*" for anything."""

    type: str

    def accepts(self, other: str) -> bool:
        return accepts(self.type, other)


@functools.lru_cache(maxsize=1024)
def accepts(wanted: str, given: str) -> bool:
    """Whether an input of type `wanted` (types joined by commas, or "*") takes an output of
    type `given`. Cached: validation asks it for every link of every prompt."""
    if wanted == "*" or given == "*":
        return True
    return bool(set(wanted.split(",")) & set(given.split(",")))


@dataclass(frozen=True)
class Input:
    name: str
    spec: Socket | Widget
    optional: bool = False
    tooltip: str = ""

    @property
    def type(self) -> str:
        return self.spec.type

    @property
    def is_widget(self) -> bool:
        return not isinstance(self.spec, Socket)


@dataclass(frozen=True)
class Output:
    type: str
    name: str = ""
    tooltip: str = ""

    @property
    def label(self) -> str:
        return self.name or self.type


# --- run time -------------------------------------------------------------------------------


@dataclass
class NodeEnv:
    """Where a node finds and puts files, and the shared services it may use."""

    models_dir: Path = Path("models")
    input_dir: Path = Path("input")
    output_dir: Path = Path("output")
    temp_dir: Path = Path("temp")
    models: Any = None  # server.models.ModelManager, when FLUX nodes are in use
    # Called by validation before anything else: hook(prompt, env) -> list of warnings; may
    # rewrite the prompt in place (e.g. point a missing model at the demo model on a new machine).
    prompt_hooks: list[Callable[[dict, NodeEnv], list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("models_dir", "input_dir", "output_dir", "temp_dir"):
            setattr(self, name, Path(getattr(self, name)))


@dataclass
class NodeContext:
    """Handed to every run function: where it runs, and how it reports progress."""

    env: NodeEnv
    node_id: str = ""
    prompt_id: str = ""
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_pnginfo: dict[str, Any] = field(default_factory=dict)
    on_progress: Callable[[int, int, Any], None] | None = None
    is_interrupted: Callable[[], bool] = lambda: False

    def check_interrupt(self) -> None:
        if self.is_interrupted():
            raise Interrupted(f"interrupted in node {self.node_id}")

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Report step `value` of `total`; also the place where long nodes stop when asked."""
        self.check_interrupt()
        if self.on_progress is not None:
            self.on_progress(value, total, preview)


@dataclass
class NodeResult:
    """What an output node returns: its outputs (often none) and what the UI shows."""

    outputs: tuple = ()
    ui: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeDef:
    class_type: str
    run: Callable[..., Any]
    category: str
    display_name: str
    description: str
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    output_node: bool = False
    # Extra text folded into the cache signature, for nodes that read files that may change
    # (e.g. LoadImage hashes the image): fingerprint(env, **constant_inputs) -> str.
    fingerprint: Callable[..., str] | None = None
    python_module: str = "nodes"

    def input(self, name: str) -> Input | None:
        for inp in self.inputs:
            if inp.name == name:
                return inp
        return None

    def widgets(self) -> list[Input]:
        return [i for i in self.inputs if i.is_widget]

    def object_info(self, env: NodeEnv | None = None) -> dict[str, Any]:
        required: dict[str, list] = {}
        optional: dict[str, list] = {}
        for inp in self.inputs:
            target = optional if inp.optional else required
            if isinstance(inp.spec, Socket):
                opts = {"tooltip": inp.tooltip} if inp.tooltip else {}
                target[inp.name] = [inp.spec.type, opts] if opts else [inp.spec.type]
            elif isinstance(inp.spec, Combo):
                opts = inp.spec.options()
                if inp.tooltip:
                    opts["tooltip"] = inp.tooltip
                target[inp.name] = [inp.spec.resolve(env), opts]
            else:
                opts = inp.spec.options()
                if inp.tooltip:
                    opts["tooltip"] = inp.tooltip
                target[inp.name] = [inp.spec.type, opts]
        return {
            "input": {"required": required, "optional": optional},
            "input_order": {
                "required": [i.name for i in self.inputs if not i.optional],
                "optional": [i.name for i in self.inputs if i.optional],
            },
            "output": [o.type for o in self.outputs],
            "output_is_list": [False for _ in self.outputs],
            "output_name": [o.label for o in self.outputs],
            "output_tooltips": [o.tooltip for o in self.outputs],
            "name": self.class_type,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }


# --- registry -------------------------------------------------------------------------------


def _check_declaration(d: NodeDef) -> None:
    where = f"node {d.class_type!r}"
    if not d.class_type or not isinstance(d.class_type, str):
        raise DeclarationError("a node needs a non-empty class_type")
    names = [i.name for i in d.inputs]
    if len(set(names)) != len(names):
        raise DeclarationError(f"{where}: duplicate input names {names}")
    for inp in d.inputs:
        if isinstance(inp.spec, Socket):
            for t in inp.spec.type.split(","):
                if t not in SOCKET_TYPES and t not in WIDGET_TYPES:
                    raise DeclarationError(f"{where}: input {inp.name!r} has unknown type {t!r}")
        elif isinstance(inp.spec, Int | Float):
            if not inp.spec.min <= inp.spec.default <= inp.spec.max:
                raise DeclarationError(f"{where}: default of {inp.name!r} is outside min..max")
        elif isinstance(inp.spec, Combo):
            if not callable(inp.spec.choices):
                choices = list(inp.spec.choices)
                if not choices:
                    raise DeclarationError(f"{where}: combo {inp.name!r} has no choices")
                if inp.spec.default is not None and inp.spec.default not in choices:
                    raise DeclarationError(f"{where}: default of {inp.name!r} is not a choice")
        elif not isinstance(inp.spec, Int | Float | String | Boolean):
            raise DeclarationError(f"{where}: input {inp.name!r} has an unknown spec {inp.spec!r}")
    for out in d.outputs:
        if out.type not in SOCKET_TYPES and out.type not in WIDGET_TYPES:
            raise DeclarationError(f"{where}: output {out.label!r} has unknown type {out.type!r}")
    if not d.outputs and not d.output_node:
        raise DeclarationError(f"{where}: a node without outputs must be an output node")

    params = list(inspect.signature(d.run).parameters.values())
    if not params or params[0].name != "ctx":
        raise DeclarationError(f"{where}: run function must take `ctx` as its first parameter")
    accepted = {p.name: p for p in params[1:]}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    for inp in d.inputs:
        p = accepted.get(inp.name)
        if p is None and not takes_kwargs:
            raise DeclarationError(f"{where}: run function has no parameter for input {inp.name!r}")
        if inp.optional and p is not None and p.default is inspect.Parameter.empty:
            raise DeclarationError(f"{where}: optional input {inp.name!r} needs a default in run")
    declared = set(names)
    for name, p in accepted.items():
        if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        if name not in declared and p.default is inspect.Parameter.empty:
            raise DeclarationError(f"{where}: run parameter {name!r} is not a declared input")


class NodeRegistry:
    def __init__(self) -> None:
        self._defs: dict[str, NodeDef] = {}

    def register(self, d: NodeDef) -> NodeDef:
        _check_declaration(d)
        if d.class_type in self._defs:
            raise DeclarationError(f"node {d.class_type!r} is registered twice")
        self._defs[d.class_type] = d
        return d

    def node(
        self,
        class_type: str,
        *,
        category: str,
        inputs: Sequence[Input] = (),
        outputs: Sequence[Output] = (),
        display_name: str | None = None,
        description: str = "",
        output_node: bool = False,
        fingerprint: Callable[..., str] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: declare and register a node whose run function is the decorated one."""

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(
                NodeDef(
                    class_type=class_type,
                    run=fn,
                    category=category,
                    display_name=display_name or class_type,
                    description=description or (inspect.getdoc(fn) or ""),
                    inputs=tuple(inputs),
                    outputs=tuple(outputs),
                    output_node=output_node,
                    fingerprint=fingerprint,
                    python_module=fn.__module__,
                )
            )
            return fn

        return wrap

    def get(self, class_type: str) -> NodeDef | None:
        return self._defs.get(class_type)

    def __contains__(self, class_type: str) -> bool:
        return class_type in self._defs

    def __iter__(self):
        return iter(self._defs.values())

    def __len__(self) -> int:
        return len(self._defs)

    def object_info(self, env: NodeEnv | None = None) -> dict[str, dict[str, Any]]:
        return {d.class_type: d.object_info(env) for d in self._defs.values()}


# The registry the application uses; `nodes.load_all()` fills it.
REGISTRY = NodeRegistry()
node = REGISTRY.node
