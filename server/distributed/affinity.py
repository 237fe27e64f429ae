"""What workers can run, and which worker runs what.

**Catalog.** A combo whose choices are read from the machine (a loader's `source`: the models
installed there) is answered by the workers in distributed mode, since the front end has no model
files: each worker resolves every such combo against its own folders and advertises the lists
(`{"LoadVAE.source": ["FLUX.1-dev", ...]}`), and the front end validates against their union.
Combos with `image_upload` (input images) stay the front end's own: uploads land there, and the
files travel to the worker with the prompt (outputs.py).

**Lanes.** A prompt's requirements are the catalog values it uses (`[["LoadVAE.source", "A"]]`);
the prompts with the same requirements share a lane, one Redis stream. A worker reads only lanes
whose requirements its catalog meets, so a prompt is never delivered to a worker that cannot run
it; and a prompt that no live worker can run is refused when it is queued.

**Affinity.** A worker advertises the models it holds (the model manager's loaded models, by the
`source` their handles describe, or their name). When it looks for work it ranks the lanes:
first those whose models it holds; then, a lane whose models it only has installed, if no other
worker holds or is loading them and it is the free worker with the fewest models loaded (ties by
name); a lane that another worker holds waits up to `affinity_wait` seconds for that worker, and
after that any worker that has the models installed takes it. Within a rank, `front` prompts come
first, then the oldest. So a model is loaded a second time only when its holder stays busy
longer than `affinity_wait`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from nodes.base import Combo, Input, NodeDef, NodeEnv, NodeRegistry
from server.distributed.config import dumps
from server.distributed.redis_queue import Snapshot

log = logging.getLogger("fluxloom.distributed")

ANY_LANE = "any"  # prompts that need no model


def catalog_inputs(registry: NodeRegistry) -> list[tuple[NodeDef, Input]]:
    """Inputs whose choices a worker answers: combos read from the machine, not uploads."""
    return [
        (d, inp)
        for d in registry
        for inp in d.inputs
        if isinstance(inp.spec, Combo) and callable(inp.spec.choices) and not inp.spec.image_upload
    ]


def catalog_key(class_type: str, input_name: str) -> str:
    return f"{class_type}.{input_name}"


def worker_catalog(registry: NodeRegistry, env: NodeEnv) -> dict[str, list[str]]:
    """This worker's answer to every catalog combo."""
    out: dict[str, list[str]] = {}
    for d, inp in catalog_inputs(registry):
        try:
            out[catalog_key(d.class_type, inp.name)] = [str(c) for c in inp.spec.resolve(env)]
        except Exception as exc:  # one broken listing must not hide the others
            log.warning("cannot list the choices of %s.%s: %s", d.class_type, inp.name, exc)
            out[catalog_key(d.class_type, inp.name)] = []
    return out


def catalog_registry(registry: NodeRegistry, choices: Callable[[str], list[str]]) -> NodeRegistry:
    """A copy of `registry` whose catalog combos offer `choices(key)` (the workers' union)."""
    wrapped: dict[str, NodeDef] = {}
    for d, _ in catalog_inputs(registry):
        if d.class_type in wrapped:
            continue
        inputs = []
        for inp in d.inputs:
            spec = inp.spec
            if isinstance(spec, Combo) and callable(spec.choices) and not spec.image_upload:
                key = catalog_key(d.class_type, inp.name)
                spec = Combo(choices=lambda env, key=key: choices(key), default=spec.default)
            inputs.append(replace(inp, spec=spec))
        wrapped[d.class_type] = replace(d, inputs=tuple(inputs))
    out = NodeRegistry()
    for d in registry:
        out.register(wrapped.get(d.class_type, d))
    return out


def requirements(prompt: dict[str, Any], registry: NodeRegistry) -> list[list[str]]:
    """The catalog values a prompt uses, `[[key, value], ...]` sorted. A value fed by a link is
    only known when the prompt runs, and so sets no requirement."""
    keys = {catalog_key(d.class_type, inp.name) for d, inp in catalog_inputs(registry)}
    found = set()
    for node in prompt.values():
        for name, value in node.get("inputs", {}).items():
            key = catalog_key(node.get("class_type", ""), name)
            if key in keys and isinstance(value, str):
                found.add((key, value))
    return [list(kv) for kv in sorted(found)]


@dataclass(frozen=True)
class Lane:
    lane_id: str
    meta: dict[str, Any]  # {"requires": [[key, value]], "models": [values], "front": bool}


def lane_for(requires: list[list[str]], front: bool = False) -> Lane:
    models = sorted({v for _, v in requires})
    lane_id = hashlib.sha1(dumps(requires).encode()).hexdigest()[:16] if requires else ANY_LANE
    if front:
        lane_id += "-front"
    return Lane(lane_id, {"requires": requires, "models": models, "front": front})


def can_run(catalog: dict[str, list[str]], requires: Iterable[list[str]]) -> bool:
    return all(value in catalog.get(key, ()) for key, value in requires)


def refusal(requires: list[list[str]], catalogs: dict[str, dict[str, list[str]]]) -> str | None:
    """Why no live worker can run a prompt with these requirements (None when one can)."""
    if not requires or any(can_run(c, requires) for c in catalogs.values()):
        return None
    if not catalogs:
        return "no worker is connected to the queue, so no worker has the models this prompt needs"
    wanted = ", ".join(f"{k}={v!r}" for k, v in requires)
    return f"no worker has every model this prompt needs ({wanted}); workers: " + "; ".join(
        f"{name} has {sorted({v for vs in cat.values() for v in vs}) or 'none'}"
        for name, cat in sorted(catalogs.items())
    )


def plan_claim(
    me: str,
    catalog: dict[str, list[str]],
    loaded: set[str],
    snap: Snapshot,
    affinity_wait: float,
) -> tuple[list[str], float | None]:
    """The lanes this worker should try now, best first, and in how many seconds a lane it
    leaves to another worker becomes its to take (None when none)."""
    others = {n: a for n, a in snap.workers.items() if n != me}
    now_ms = snap.now * 1000
    ranked: list[tuple[int, int, str, str]] = []
    recheck: float | None = None
    for lane in snap.lanes:
        if lane.head is None or not can_run(catalog, lane.meta["requires"]):
            continue
        models = set(lane.meta["models"])
        waited = (now_ms - lane.head_ms) / 1000 if lane.head_ms is not None else 0.0
        if models <= loaded:
            rank = 0
        elif waited >= affinity_wait or not _better_placed(me, models, loaded, others):
            rank = 1
        else:
            left = affinity_wait - waited
            recheck = left if recheck is None else min(recheck, left)
            continue
        ranked.append((rank, 0 if lane.meta.get("front") else 1, lane.head, lane.lane))
    ranked.sort()
    return [lane for *_, lane in ranked], recheck


def _better_placed(me: str, models: set[str], loaded: set[str], others: dict[str, dict[str, Any]]) -> bool:
    """Whether another worker should take a lane whose models this one does not hold: one that
    holds (or is loading) them, or a free one with fewer models loaded that has them installed."""
    mine = (len(loaded), me)
    for name, advert in others.items():
        holds = set(advert.get("loaded", ())) | set(advert.get("busy_models", ()))
        if models <= holds:
            return True
        free = advert.get("state") == "idle"
        if (
            free
            and models <= set(advert.get("installed", ()))
            and (len(advert.get("loaded", ())), name) < mine
        ):
            return True
    return False
