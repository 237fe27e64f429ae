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
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

MAX_SEED = 2**64 - 1


class DeclarationError(TypeError):
    """A node declaration does not match its run function or is malformed."""


class Interrupted(Exception):
    """Raised inside a node when the user interrupted the prompt."""


# --- socket types ---------------------------------------------------------------------------
#
# A socket type is a value owned by the package that defines it: a name (what /object_info and
# the canvas show) and the Python value that travels on it. FLUX declares its own in
# nodes/flux/types.py; a custom node module declares new ones with `socket_type(...)`. A name is
# declared once, so one type name always means one Python value; using an undeclared name (a
# typo) fails when the node is declared, at import.


class _NamedType:
    """What socket types and unions share: they are known by their name, which is unique, so a
    type equals its name (code and tests may compare with "LATENT"), and `A | B` is a union."""

    name: str

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _NamedType | str):
            return self.name == (other if isinstance(other, str) else other.name)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __or__(self, other: SocketType | TypeUnion) -> TypeUnion:
        mine = self.members if isinstance(self, TypeUnion) else (self,)
        extra = other.members if isinstance(other, TypeUnion) else (other,)
        return TypeUnion(tuple(dict.fromkeys((*mine, *extra))))


@dataclass(frozen=True, eq=False)
class SocketType(_NamedType):
    name: str
    value: str  # the Python value that travels on it, for docs and `fluxloom nodes`

    @property
    def names(self) -> frozenset[str]:
        return frozenset((self.name,))


@dataclass(frozen=True, eq=False)
class TypeUnion(_NamedType):
    """An input that takes any of several types, written `A | B`."""

    members: tuple[SocketType, ...]

    @property
    def name(self) -> str:  # ComfyUI's spelling of a union in /object_info
        return ",".join(m.name for m in self.members)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(m.name for m in self.members)


AnyType = SocketType | TypeUnion
_DECLARED: dict[str, SocketType] = {}


def socket_type(name: str, value: str) -> SocketType:
    """Declare a socket type. Declaring a name again with the same description returns the same
    type (a module imported twice); with another description it is an error."""
    if not isinstance(name, str) or not name or "," in name:
        raise DeclarationError(f"a socket type needs a name without commas, not {name!r}")
    known = _DECLARED.get(name)
    if known is not None:
        if known.value != value:
            raise DeclarationError(
                f"socket type {name!r} is already declared as {known.value!r}; one type name means one "
                "Python value: import the declared type, or give yours another name"
            )
        return known
    declared = _DECLARED[name] = SocketType(name, value)
    return declared


def declared_types() -> list[SocketType]:
    return list(_DECLARED.values())


def resolve_type(spec: AnyType | str) -> AnyType:
    """A type given as a value, or as the name of a declared type (custom node modules written
    with strings keep working; an undeclared name is an error, naming it)."""
    if isinstance(spec, SocketType | TypeUnion):
        return spec
    if isinstance(spec, str) and "," in spec:
        parts = " | ".join(spec.split(","))
        raise DeclarationError(f"type {spec!r}: write a union as a value ({parts}), not a joined string")
    found = _DECLARED.get(spec) if isinstance(spec, str) else None
    if found is None:
        raise DeclarationError(f"unknown socket type {spec!r}; declare it with nodes.base.socket_type()")
    return found


@functools.lru_cache(maxsize=1024)
def accepts(wanted: AnyType, given: AnyType) -> bool:
    """Whether an input of type `wanted` takes an output of type `given`. Cached: validation
    asks it for every link of every prompt."""
    if ANY.name in wanted.names or ANY.name in given.names:
        return True
    return bool(wanted.names & given.names)


ANY = socket_type("*", "any value (pass-through sockets)")
INT = socket_type("INT", "int")
FLOAT = socket_type("FLOAT", "float")
STRING = socket_type("STRING", "str")
BOOLEAN = socket_type("BOOLEAN", "bool")
COMBO = socket_type("COMBO", "str, one of the input's choices")


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
    type = INT

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
    type = FLOAT

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
    type = STRING

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
    type = BOOLEAN

    def options(self) -> dict[str, Any]:
        return {"default": self.default, "label_on": self.label_on, "label_off": self.label_off}


@dataclass(frozen=True)
class Combo:
    """A choice among strings. `choices` may be a callable of the `NodeEnv` for lists that
    depend on the machine (models found, input images)."""

    choices: Sequence[str] | Callable[[NodeEnv], Sequence[str]] = ()
    default: str | None = None
    image_upload: bool = False
    type = COMBO

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


def _resolve_field(spec: Any) -> None:
    """Turn a type given by name into the declared type. An unknown name is kept as given, and
    registering the node fails on it (at import), naming the node and the input."""
    try:
        object.__setattr__(spec, "type", resolve_type(spec.type))
    except DeclarationError:
        pass


@dataclass(frozen=True)
class Socket:
    """An input that only takes a link: of one declared type, a union `A | B`, or ANY."""

    type: AnyType

    def __post_init__(self) -> None:
        _resolve_field(self)


@dataclass(frozen=True)
class Input:
    name: str
    spec: Socket | Widget
    optional: bool = False
    tooltip: str = ""
    # Older names of this input, still accepted from saved workflows and API prompts (e.g.
    # VAEDecode's `latent` before it took ComfyUI's name, `samples`).
    aliases: tuple[str, ...] = ()

    @property
    def type(self) -> AnyType:
        return self.spec.type

    @property
    def is_widget(self) -> bool:
        return not isinstance(self.spec, Socket)


@dataclass(frozen=True)
class Output:
    type: AnyType
    name: str = ""
    tooltip: str = ""

    def __post_init__(self) -> None:
        _resolve_field(self)

    @property
    def label(self) -> str:
        return self.name or self.type.name


# --- services a node may use ----------------------------------------------------------------
#
# Nodes never import the server: what they may ask of the engine is declared here, as InvokeAI's
# invocation context does (`context.models.load(...)`). The server implements these.


@dataclass
class LoadedModel:
    """A model's weights on a device, as `ModelService.use` hands them to a node."""

    module: Any  # torch.nn.Module
    tokenizer: Any | None
    device: Any  # torch.device
    dtype: Any  # torch.dtype: the compute dtype


class ModelHandleLike(Protocol):
    """What a loader node outputs: a cheap, hashable name of one model; no weights."""

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...


class ModelService(Protocol):
    """The engine's model manager, as nodes see it: `with ctx.models.use(handle) as loaded:`
    brings a model onto the device (loading it the first time) and keeps it there while the block
    runs; `offload` and `release` make the low-VRAM phases explicit."""

    device: Any  # torch.device the models run on

    def use(self, handle: ModelHandleLike) -> AbstractContextManager[LoadedModel]: ...

    def offload(self, handle: ModelHandleLike) -> None: ...

    def release(self, handle: ModelHandleLike) -> None: ...

    def release_all(self) -> None: ...


@dataclass(frozen=True)
class ModelProvider:
    """What a node package hands the engine's model manager at start-up: how to load one of its
    handles onto a device, how large it will be (to make room first), and whether only the demo
    model is installed (a fact every front end shows the same way)."""

    load: Callable[[Any, Any], LoadedModel]  # (handle, torch.device) -> LoadedModel
    estimate: Callable[[Any, Any], int] | None = None  # (handle, torch.device) -> bytes
    demo_only: Callable[[], bool] = lambda: False


@dataclass
class NodeEnv:
    """Where a node finds and puts files, and the shared services it may use."""

    models_dir: Path = Path("models")
    input_dir: Path = Path("input")
    output_dir: Path = Path("output")
    temp_dir: Path = Path("temp")
    # More model folders, as ComfyUI's extra_model_paths.yaml files name them (--extra-model-paths).
    extra_model_paths: tuple[Path, ...] = ()
    models: ModelService | None = None  # None in a runtime without models (engine tests)
    # Called by validation before anything else: hook(prompt, env) -> list of warnings; may
    # rewrite the prompt in place (e.g. point a missing model at the demo model on a new machine).
    prompt_hooks: list[Callable[[dict, NodeEnv], list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("models_dir", "input_dir", "output_dir", "temp_dir"):
            setattr(self, name, Path(getattr(self, name)))
        self.extra_model_paths = tuple(Path(p) for p in self.extra_model_paths)


@dataclass
class NodeContext:
    """Handed to every run function: where it runs, the services it may use, and how it reports
    progress."""

    env: NodeEnv
    node_id: str = ""
    class_type: str = ""
    prompt_id: str = ""
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_pnginfo: dict[str, Any] = field(default_factory=dict)
    on_progress: Callable[[int, int, Any], None] | None = None
    is_interrupted: Callable[[], bool] = lambda: False

    @property
    def models(self) -> ModelService:
        """The model manager; a runtime without one cannot run nodes that load models."""
        if self.env.models is None:
            who = self.class_type or f"node {self.node_id}"
            raise RuntimeError(f"{who} needs the model manager, which this runtime does not have")
        return self.env.models

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
        """The input called `name`, or whose older name it is."""
        for inp in self.inputs:
            if inp.name == name:
                return inp
        for inp in self.inputs:
            if name in inp.aliases:
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
                target[inp.name] = [inp.spec.type.name, opts] if opts else [inp.spec.type.name]
            elif isinstance(inp.spec, Combo):
                opts = inp.spec.options()
                if inp.tooltip:
                    opts["tooltip"] = inp.tooltip
                target[inp.name] = [inp.spec.resolve(env), opts]
            else:
                opts = inp.spec.options()
                if inp.tooltip:
                    opts["tooltip"] = inp.tooltip
                target[inp.name] = [inp.spec.type.name, opts]
        return {
            "input": {"required": required, "optional": optional},
            "input_order": {
                "required": [i.name for i in self.inputs if not i.optional],
                "optional": [i.name for i in self.inputs if i.optional],
            },
            "output": [o.type.name for o in self.outputs],
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
    aliases = [a for i in d.inputs for a in i.aliases]
    if len(set(aliases)) != len(aliases) or set(aliases) & set(names):
        raise DeclarationError(f"{where}: an input alias repeats a name or another alias: {aliases}")
    for inp in d.inputs:
        if isinstance(inp.spec, Socket) and not isinstance(inp.spec.type, SocketType | TypeUnion):
            raise DeclarationError(f"{where}: input {inp.name!r}: {_type_problem(inp.spec.type)}")
        if isinstance(inp.spec, Int | Float):
            if not inp.spec.min <= inp.spec.default <= inp.spec.max:
                raise DeclarationError(f"{where}: default of {inp.name!r} is outside min..max")
        elif isinstance(inp.spec, Combo):
            if not callable(inp.spec.choices):
                choices = list(inp.spec.choices)
                if not choices:
                    raise DeclarationError(f"{where}: combo {inp.name!r} has no choices")
                if inp.spec.default is not None and inp.spec.default not in choices:
                    raise DeclarationError(f"{where}: default of {inp.name!r} is not a choice")
        elif not isinstance(inp.spec, Socket | Int | Float | String | Boolean):
            raise DeclarationError(f"{where}: input {inp.name!r} has an unknown spec {inp.spec!r}")
    for out in d.outputs:
        if not isinstance(out.type, SocketType | TypeUnion):
            raise DeclarationError(f"{where}: output {out.name or out.type!r}: {_type_problem(out.type)}")
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


def _type_problem(spec: Any) -> str:
    try:
        resolve_type(spec)
    except DeclarationError as exc:
        return str(exc)
    return f"{spec!r} is not a socket type"


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
