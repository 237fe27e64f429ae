"""The settings every process of one fluxloom cluster shares, the Redis key names, and the Redis
connection (a clear message when the `redis` package is missing or the server cannot be reached)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

GROUP = "workers"  # the consumer group of every lane stream
EVENTS_MAXLEN = 10_000  # events kept per front end stream (a front end that is down for long misses some)
EVENTS_TTL_S = 3600  # an event stream nobody writes to for an hour (a front end gone for good) expires
BUS_MAXLEN = 1_000


class QueueUnavailable(RuntimeError):
    """Redis cannot be reached (or the `redis` package is missing); the message says which."""


@dataclass(frozen=True)
class ClusterConfig:
    """Shared by front ends and workers; pass the same values to all of them."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "fluxloom"
    visibility_timeout: float = (
        60.0  # a claimed prompt whose worker stops heart-beating this long is reclaimed
    )
    max_deliveries: int = 3  # deliveries after which a prompt that never finished is dead-lettered
    heartbeat: float = 0.0  # 0: a quarter of the visibility timeout
    affinity_wait: float = 10.0  # how long a prompt waits for a worker that has its models loaded
    max_output_bytes: int = 64 * 2**20  # output (and input) files of one prompt travelling through Redis
    file_ttl: float = 7 * 24 * 3600.0  # how long files stay in Redis for /view on any front end

    @property
    def beat(self) -> float:
        return self.heartbeat or max(0.05, self.visibility_timeout / 4)

    @property
    def advert_ttl(self) -> float:
        """A worker that has not advertised itself for this long is considered gone."""
        return max(3 * self.beat, 1.0)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    def redacted_url(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


class Keys:
    """Every Redis key of one cluster. All share the hash tag `{prefix}`, so a Redis Cluster
    keeps them in one slot and the Lua scripts may touch any of them."""

    def __init__(self, prefix: str) -> None:
        self.base = "{" + prefix + "}"

    def prompt(self, prompt_id: str) -> str:
        return f"{self.base}:prompt:{prompt_id}"

    @property
    def prompt_prefix(self) -> str:
        return f"{self.base}:prompt:"

    @property
    def queued(self) -> str:  # zset: pending prompt ids by number
        return f"{self.base}:queued"

    @property
    def running(self) -> str:  # set of running prompt ids
        return f"{self.base}:running"

    @property
    def history(self) -> str:  # zset: finished prompt ids by finish order
        return f"{self.base}:history"

    @property
    def counter(self) -> str:
        return f"{self.base}:counter"

    @property
    def seq(self) -> str:
        return f"{self.base}:seq"

    @property
    def lanes(self) -> str:  # hash: lane id -> JSON {requires, models, front}
        return f"{self.base}:lanes"

    def lane(self, lane_id: str) -> str:
        return f"{self.base}:lane:{lane_id}"

    @property
    def doorbell(self) -> str:  # stream: rung when work arrives or a worker's state changes
        return f"{self.base}:doorbell"

    @property
    def bus(self) -> str:  # stream: "the queue changed", read by every front end
        return f"{self.base}:bus"

    @property
    def control(self) -> str:  # stream: interrupt / free requests for workers
        return f"{self.base}:control"

    @property
    def dead(self) -> str:  # stream: dead-lettered prompts
        return f"{self.base}:dead"

    def events(self, frontend: str) -> str:
        return f"{self.base}:events:{frontend}"

    def preview(self, prompt_id: str, node: str) -> str:  # the newest preview JPEG of a running node
        return f"{self.base}:preview:{prompt_id}:{node}"

    @property
    def workers(self) -> str:  # set of worker names (each advertises itself with a TTL)
        return f"{self.base}:workers"

    def worker(self, name: str) -> str:
        return f"{self.base}:worker:{name}"

    def catalog(self, name: str) -> str:
        return f"{self.base}:catalog:{name}"

    def file(self, kind: str, subfolder: str, filename: str) -> str:
        return f"{self.base}:file:{file_id(kind, subfolder, filename)}"

    def input(self, digest: str) -> str:
        return f"{self.base}:input:{digest}"


def file_id(kind: str, subfolder: str, filename: str) -> str:
    """How an output file is named in Redis: `output/sub/name.png` (`output//name.png` at the top)."""
    return f"{kind}/{subfolder}/{filename}"


def connect(url: str, *, timeout: float = 10.0) -> Any:
    """A thread-safe client (bytes in and out) that reconnects by itself after a lost connection."""
    try:
        import redis
    except ImportError:
        raise QueueUnavailable(
            "the distributed mode needs the `redis` package: pip install 'fluxloom[distributed]'"
        ) from None
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 5.0),
            health_check_interval=30,
            decode_responses=False,
        )
    except ValueError as exc:
        raise QueueUnavailable(f"--queue {url!r} is not a Redis URL (redis://HOST:PORT/DB): {exc}") from None


def redis_errors() -> tuple[type[BaseException], ...]:
    """Redis is unreachable (down, restarting, loading its data)."""
    import redis

    return (redis.ConnectionError, redis.TimeoutError)


def connection_errors() -> tuple[type[BaseException], ...]:
    return (*redis_errors(), OSError)


def retrying(
    fn: Callable[[], T], *, what: str, stop: Callable[[], bool] = lambda: False, log: Any = None
) -> T:
    """Call `fn` until Redis answers (it may be restarting); give up only when `stop()` says so."""
    delay = 0.05
    errors = connection_errors()
    warned = False
    while True:
        try:
            return fn()
        except errors as exc:
            if stop():
                raise
            if log is not None and not warned:
                log.warning("Redis unreachable while %s (%s); retrying", what, exc)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def add_queue_options(
    p: argparse.ArgumentParser, *, required: bool, parse_size: Callable[[str], int]
) -> None:
    """`--queue` and the cluster settings, for `serve` and `worker` (`parse_size`: the CLI's
    reading of sizes such as 64M)."""
    p.add_argument(
        "--queue",
        default=None,
        required=required,
        metavar="redis://HOST:PORT/DB",
        help="the shared Redis queue (distributed mode); without it, `serve` runs its own queue",
    )
    d = ClusterConfig()
    p.add_argument(
        "--queue-prefix", default=d.prefix, metavar="NAME", help="key prefix of this cluster in Redis"
    )
    p.add_argument(
        "--visibility-timeout",
        type=float,
        default=d.visibility_timeout,
        metavar="S",
        help="seconds without a heartbeat before a claimed prompt is taken over by another worker "
        f"(default {d.visibility_timeout:g})",
    )
    p.add_argument(
        "--max-deliveries",
        type=int,
        default=d.max_deliveries,
        metavar="N",
        help=f"a prompt delivered N times without finishing is dead-lettered (default {d.max_deliveries})",
    )
    p.add_argument(
        "--heartbeat", type=float, default=0.0, metavar="S", help="default: visibility timeout / 4"
    )
    p.add_argument(
        "--affinity-wait",
        type=float,
        default=d.affinity_wait,
        metavar="S",
        help="how long a prompt waits for a worker that has its models loaded (default 10)",
    )
    p.add_argument(
        "--max-output-bytes",
        type=parse_size,
        default=d.max_output_bytes,
        metavar="SIZE",
        help="largest total of one prompt's output (or input) files sent through Redis (default 64M)",
    )


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    """The settings from the command line; ValueError names a setting that makes no sense."""
    if not args.visibility_timeout > 0:
        raise ValueError(f"--visibility-timeout must be above 0, not {args.visibility_timeout}")
    if args.max_deliveries < 1:
        raise ValueError(f"--max-deliveries must be at least 1, not {args.max_deliveries}")
    if args.heartbeat < 0 or (args.heartbeat and args.heartbeat >= args.visibility_timeout):
        raise ValueError("--heartbeat must be shorter than --visibility-timeout")
    return ClusterConfig(
        url=args.queue,
        prefix=args.queue_prefix,
        visibility_timeout=args.visibility_timeout,
        max_deliveries=args.max_deliveries,
        heartbeat=args.heartbeat,
        affinity_wait=args.affinity_wait,
        max_output_bytes=args.max_output_bytes,
    )
