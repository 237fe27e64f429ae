"""`fluxloom` command line: serve | worker | run | queue | nodes | demo-model."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from server.validation import DEFAULT_MAX_NODES

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def parse_size(text: str) -> int:
    """'16G', '512M', '1.5GiB', '1000000' → bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        size = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(float(t))
    except (ValueError, OverflowError):  # OverflowError: "inf", "1e400"
        size = -1
    if size < 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 16G, 512M)")
    return size


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"not a positive {kind.__name__}: {text!r}")
        return value

    return parse


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    _add_model_folder_options(p)
    p.add_argument(
        "--vram-budget",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="device memory fluxloom may fill with models (default: free memory)",
    )
    p.add_argument(
        "--ram-budget",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="host RAM for offloaded models (default: a share of system RAM)",
    )
    p.add_argument(
        "--cache-budget",
        type=parse_size,
        default=parse_size("4G"),
        metavar="SIZE",
        help="RAM for cached node outputs, LRU-evicted (default: 4G)",
    )


def _add_preview_option(p: argparse.ArgumentParser) -> None:
    from server.previews import METHODS

    p.add_argument(
        "--preview-method",
        choices=METHODS,
        default="auto",
        help="live previews of sampler steps on the websocket: latent2rgb (a fixed projection of "
        "the latent, no VAE decode; auto is the same) or none (default: auto)",
    )


def _add_queue_options(p: argparse.ArgumentParser, required: bool) -> None:
    from server.distributed.config import add_queue_options

    add_queue_options(p, required=required, parse_size=parse_size)


def _add_model_folder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        type=Path,
        default=Path("models"),
        metavar="DIR",
        help="models folder, laid out as ComfyUI's: point it at ComfyUI's models/ (default: ./models)",
    )
    p.add_argument(
        "--extra-model-paths",
        type=extra_model_paths_file,
        action="append",
        default=[],
        metavar="FILE",
        help="a ComfyUI extra_model_paths.yaml naming more model folders (repeatable; the one "
        "next to the models folder is read anyway, as ComfyUI does)",
    )


def extra_model_paths_file(text: str) -> Path:
    """An extra_model_paths.yaml that must read, or a usage error naming the problem."""
    from nodes.flux.formats.discovery import ExtraModelPathsError, read_extra_model_paths

    try:
        read_extra_model_paths(text)
    except ExtraModelPathsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxloom",
        description="Node graph editor and execution server for FLUX.1 text-to-image, "
        "with a two-phase low-VRAM flow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "serve",
        help="run the HTTP/websocket server and the browser canvas",
        description="Serve the canvas and the ComfyUI-compatible API.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8188, help="port (default 8188)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="queue database, saved workflows, inputs and outputs (default: ./data)",
    )
    p.add_argument(
        "--token", default=None, help="access token required on every request (needed off loopback)"
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen off loopback without a token (anyone who can reach it can use it)",
    )
    p.add_argument(
        "--max-history",
        type=_positive(int),
        default=10_000,
        metavar="N",
        help="finished prompts kept in the history, oldest dropped first (default 10000, as ComfyUI)",
    )
    p.add_argument(
        "--max-nodes",
        type=_positive(int),
        default=DEFAULT_MAX_NODES,
        metavar="N",
        help="nodes in one prompt; a larger one is refused with prompt_too_large "
        f"(default {DEFAULT_MAX_NODES:,})",
    )
    p.add_argument(
        "--header-timeout",
        type=_positive(float),
        default=10.0,
        metavar="SECONDS",
        help="a request's headers must arrive within this of the connection opening or of the "
        "previous response; also the idle keep-alive timeout (default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="after this, a request body must arrive at 16 KiB/s on average, else 408 (default 30)",
    )
    p.add_argument(
        "--frontend",
        choices=("fluxloom", "comfyui"),
        default="fluxloom",
        help="web UI at /: fluxloom's canvas (default) or the official ComfyUI frontend "
        "(needs the extra: pip install 'fluxloom[comfyui]')",
    )
    _add_preview_option(p)
    _add_runtime_options(p)
    _add_queue_options(p, required=False)

    p = sub.add_parser(
        "worker",
        help="run prompts from a shared Redis queue (distributed mode, see docs/scale-out.md)",
        description="Claim prompts from the queue that `fluxloom serve --queue` front ends fill, "
        "run them with the models under --models, and report back through the queue.",
    )
    p.add_argument("--name", default=None, help="this worker's name on the queue (default: HOST-PID)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("worker-data"),
        metavar="DIR",
        help="the worker's own input/output/temp folders (default: ./worker-data)",
    )
    _add_preview_option(p)
    _add_runtime_options(p)
    _add_queue_options(p, required=True)

    p = sub.add_parser(
        "run",
        help="run a workflow in this process and print the files it wrote",
        description="Run a workflow headlessly. WORKFLOW is a UI- or API-format "
        "JSON file, a PNG that carries a workflow, or the name of a "
        "shipped workflow. Exit 0 on success, 2 on validation errors, "
        "1 on an execution error, 130 when interrupted with Ctrl-C.",
    )
    p.add_argument("workflow", metavar="WORKFLOW")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override an input; NODE is a node id or title (repeatable)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path("output"),
        metavar="DIR",
        help="where images are written (default: ./output)",
    )
    p.add_argument(
        "--input-dir",
        type=Path,
        default=Path("input"),
        metavar="DIR",
        help="where LoadImage finds images (default: ./input)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_runtime_options(p)

    p = sub.add_parser(
        "queue",
        help="queue a workflow on a running server",
        description="Queue a saved workflow (by name) or a workflow file on a running fluxloom server.",
    )
    p.add_argument("workflow", metavar="NAME_OR_FILE")
    p.add_argument("--server", default="http://127.0.0.1:8188", metavar="URL")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE")
    p.add_argument("--wait", action="store_true", help="wait for the result and print the images")
    p.add_argument("--token", default=None, help="access token of the server")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser(
        "nodes",
        help="print the node catalogue (what /object_info serves)",
        description="List node types with their inputs, choices and outputs.",
    )
    p.add_argument("class_type", nargs="?", metavar="CLASS")
    p.add_argument("--json", action="store_true", help="print /object_info JSON")
    _add_model_folder_options(p)

    p = sub.add_parser(
        "demo-model",
        help="write the tiny random demo FLUX model",
        description="Build the tiny random FLUX pipeline (images are noise) into "
        "MODELS/diffusers/fluxloom-demo; with --format comfyui, also as ComfyUI's single files "
        "(diffusion_models/, text_encoders/, vae/, checkpoints/, loras/, a GGUF Q8_0).",
    )
    p.add_argument("--models", type=Path, default=Path("models"), metavar="DIR")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.add_argument(
        "--format",
        choices=("diffusers", "comfyui"),
        default="diffusers",
        help="diffusers: the pipeline folder; comfyui: the folder and ComfyUI's single files",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handlers = {
        "run": cmd_run,
        "nodes": cmd_nodes,
        "serve": cmd_serve,
        "worker": cmd_worker,
        "queue": cmd_queue,
        "demo-model": cmd_demo_model,
    }
    return handlers[args.command](args)


def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import serve_main

    return serve_main(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from server.distributed.remote_worker import worker_main

    return worker_main(args)


def cmd_queue(args: argparse.Namespace) -> int:
    from server.client import queue_main

    return queue_main(args)


def cmd_demo_model(args: argparse.Namespace) -> int:
    from nodes.flux.demo import demo_model_main

    code = demo_model_main(args)
    if code == 0 and args.format == "comfyui":
        from nodes.flux.demo_files import ensure_demo_files

        for path in ensure_demo_files(args.models, force=args.force).values():
            print(path)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    """Prepare the workflow as the server would, run it here with progress bars, print the files."""
    from server.runtime import config_from_args, create_runtime

    try:
        rt = create_runtime(config_from_args(args, output_dir=args.output_dir, input_dir=args.input_dir))
    except OSError as exc:  # e.g. --output-dir or --models names a file, or is not writable
        print(f"fluxloom run: cannot set up the folders: {exc}", file=sys.stderr)
        return EXIT_INVALID
    prepared = _prepare_for_run(args, rt)
    if isinstance(prepared, int):
        return prepared
    try:
        result = _execute_with_progress(args, rt, prepared)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_result(args, rt, result)
    if result.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED


def _prepare_for_run(args: argparse.Namespace, rt: Any) -> Any:
    """The prepared prompt, or the exit code after printing why there is none."""
    from server import events
    from server.prepare import prepare_prompt
    from server.validation import ValidationError
    from server.workflow_io import WorkflowError, load_workflow, parse_override

    try:
        data = load_workflow(args.workflow)
        overrides = dict(parse_override(o) for o in args.overrides)
        return prepare_prompt(data, rt.registry, rt.env, overrides=overrides)
    except WorkflowError as exc:
        return _report_invalid(args, events.error_body(events.error_item("invalid_workflow", str(exc))))
    except ValidationError as exc:
        return _report_invalid(args, exc.as_json(), exc.prompt)


def _execute_with_progress(args: argparse.Namespace, rt: Any, prepared: Any) -> Any:
    """Run with a progress line per node and a bar per sampling run; the first Ctrl-C stops at
    the next node or sampler step (as the server's Interrupt does), a second one at once."""
    from tqdm import tqdm

    printer = _ProgressPrinter(prepared.prompt, quiet=args.json)

    def on_ctrl_c(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tqdm.write("interrupting (Ctrl-C again to stop at once)", file=sys.stderr)
        rt.executor.interrupt()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_ctrl_c) if in_main_thread else None
    try:
        return rt.executor.execute(prepared.validated, "cli", printer, prepared.extra_data)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
        printer.close()


class _ProgressPrinter:
    """Executor listener for the terminal: which node runs, what was cached, step bars."""

    def __init__(self, prompt: dict[str, Any], quiet: bool) -> None:
        self.prompt, self.quiet = prompt, quiet
        self.bar: Any = None
        self.bar_node: str | None = None
        self.title = ""

    def __call__(self, event: str, d: dict[str, Any]) -> None:
        from tqdm import tqdm

        if event == "executing":
            self.close()  # the node that reported progress is done
            if d["node"] is not None:
                node = self.prompt[d["node"]]
                title = node["_meta"].get("title")
                self.title = title if isinstance(title, str) and title else node["class_type"]
                if not self.quiet:
                    tqdm.write(f"▶ {d['node']} {self.title}", file=sys.stderr)
        elif event == "progress":
            if self.bar is None or self.bar.total != d["max"] or self.bar_node != d["node"]:
                self.close()
                self.bar = tqdm(
                    total=d["max"],
                    desc=self.title or d["node"],
                    file=sys.stderr,
                    disable=self.quiet,
                    leave=False,
                )
                self.bar_node = d["node"]
            self.bar.n = d["value"]
            self.bar.refresh()
        elif event == "execution_cached" and d["nodes"] and not self.quiet:
            tqdm.write(f"cached: {', '.join(d['nodes'])}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_result(args: argparse.Namespace, rt: Any, result: Any) -> None:
    files = [
        str(
            Path(rt.env.output_dir if img.get("type") == "output" else rt.env.temp_dir)
            / img.get("subfolder", "")
            / img["filename"]
        )
        for ui in result.outputs.values()
        for img in ui.get("images", [])
    ]
    if args.json:
        summary = {
            "status": result.status,
            "files": files,
            "outputs": result.outputs,
            "error": result.error,
            "seconds": round(result.seconds, 3),
        }
        print(json.dumps(summary, indent=2))
    elif result.ok:
        for nid, ui in result.outputs.items():
            for text in ui.get("text", []):
                print(f"{nid}: {text}")
        for f in files:
            print(f)
    elif result.status == "interrupted":
        print("interrupted", file=sys.stderr)
    else:
        e = result.error
        print(
            f"error in node {e['node_id']} ({e['node_type']}, {e['node_title']!r}): {e['exception_message']}",
            file=sys.stderr,
        )
        if args.verbose:
            print("".join(e["traceback"]), file=sys.stderr)


def _report_invalid(args: argparse.Namespace, payload: dict, prompt: dict | None = None) -> int:
    from server.validation import format_errors

    if args.json:
        print(json.dumps({"status": "invalid", **payload}, indent=2))
    else:
        print(format_errors(payload, prompt), file=sys.stderr)
    return EXIT_INVALID


def cmd_nodes(args: argparse.Namespace) -> int:
    import nodes
    from nodes.base import NodeEnv

    registry = nodes.load_all()
    info = registry.object_info(
        NodeEnv(models_dir=args.models, extra_model_paths=tuple(args.extra_model_paths))
    )
    if args.class_type:
        if args.class_type not in info:
            print(f"no node type {args.class_type!r}; known: {', '.join(sorted(info))}", file=sys.stderr)
            return EXIT_INVALID
        info = {args.class_type: info[args.class_type]}
    if args.json:
        print(json.dumps(info if not args.class_type else info, indent=2))
        return EXIT_OK
    for name, entry in info.items():
        print(format_node(name, entry))
    return EXIT_OK


def format_node(name: str, entry: dict[str, Any]) -> str:
    lines = [f"{name}  [{entry['category']}]" + (" (output node)" if entry["output_node"] else "")]
    if entry.get("description"):
        lines.append(f"  {entry['description']}")
    for group in ("required", "optional"):
        for inp, spec in entry["input"][group].items():
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if isinstance(kind, list):
                shown = ", ".join(kind) if kind else "(none found)"
                desc = f"one of [{shown}]"
            else:
                desc = kind
                bits = [f"{k}={opts[k]}" for k in ("default", "min", "max", "step") if k in opts]
                if opts.get("multiline"):
                    bits.append("multiline")
                if bits:
                    desc += f" ({', '.join(bits)})"
            if "default" in opts and isinstance(kind, list):
                desc += f" (default={opts['default']})"
            lines.append(f"  in  {inp}{'?' if group == 'optional' else ''}: {desc}")
    for out_type, out_name in zip(entry["output"], entry["output_name"], strict=True):
        lines.append(f"  out {out_name}: {out_type}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
