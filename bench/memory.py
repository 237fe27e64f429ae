"""Peak memory of the two-phase flow against diffusers' everything-at-once pipeline.

Builds a medium random FLUX pipeline (>= 1 GB of fp32 weights, the transformer larger than T5,
as in FLUX.1; cached under bench/results/, never committed) and measures, each in its own
process, the peak RSS of:

  (a) a bare process that imports torch, diffusers and the transformers model classes,
  (b) diffusers' FluxPipeline with every part loaded at once, generating one image,
  (c) `fluxloom run` of the shipped two-phase workflow with quantization "none",
  (d) the same with the T5 in int8 (bitsandbytes),
  (e) the same with T5 and transformer in int8 (bitsandbytes): the shipped workflow's defaults.

Then each model phase alone, loaded through fluxloom's own loader (nodes/flux/provider.py) and
run once, in its own process:

  (f) the transformer from a ComfyUI-style bf16 single file (BFL layout),
  (g) the same weights as an fp8 (e4m3fn) single file, kept 8-bit,
  (h) the same weights as a GGUF Q8_0 file, kept quantized,
  (i) phase 1: T5 from the pipeline folder, unquantized, encoding one prompt,
  (j) phase 1 with the T5 in int8 (bitsandbytes; its `wo` layers stay in full precision, as
      transformers keeps them, because bitsandbytes computes in fp16 and T5's `wo` overflows it),
  (k) phase 1 with the T5 in int8 weight-only (torchao; every Linear quantized),
  (l)-(n) the same three for a T5 shaped like T5-XXL (d_ff = 2.5 d_model, 16 layers, 0.48 B
      parameters, one fp32 single file as ComfyUI's text_encoders/ hold them; built once and
      cached), so that its embedding is a tenth of the model as in T5-XXL (3%) rather than the
      quarter it is in the medium pipeline's small T5.

Targets: (g) and (h) well under (f) (half the weight bytes); int8 T5 <= 0.6 x unquantized, above
(a). The medium T5 cannot show it: a quarter of it is the input embedding, which neither library
quantizes (transformers keeps it as is), and the first encode adds about 100 MiB of the CPU
runtime's own working memory whatever the model's size; both are small next to a real T5-XXL.
So the target is judged on the T5-XXL-shaped rows, and (i)-(k) are printed for comparison.

Safetensors are memory-mapped, so RSS grows as weights are touched: peaks are taken over the
whole run (getrusage of the finished child), never after loading. On this CPU-only machine the
"device" is RAM, so the process's RSS is the device memory that the phases are about.

Target: (c) - (a) <= 1.15 x the weights of the larger phase (transformer + VAE).

    .venv/bin/python bench/memory.py [--size 256] [--steps 4] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
MODEL_NAME = "fluxloom-medium"
PROMPT = "A cat holding a sign that says hello world"
TARGET = 1.15
T5_TARGET = 0.6  # an int8 T5's phase peak against the unquantized one's
INT8 = "int8 (bitsandbytes)"
INT8_TORCHAO = "int8 weight-only (torchao)"

BARE = (
    "import torch, diffusers, transformers\n"
    "from diffusers import FluxPipeline, FluxTransformer2DModel, AutoencoderKL\n"
    "from transformers import CLIPTextModel, T5EncoderModel\n"
)

PIPELINE = """
import sys, torch
from diffusers import FluxPipeline
path, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pipe = FluxPipeline.from_pretrained(path, dtype=torch.float32)
with torch.no_grad():
    image = pipe(
        "{prompt}", height=size, width=size, num_inference_steps=steps, guidance_scale=3.5,
        max_sequence_length=512, generator=torch.Generator("cpu").manual_seed(0), output_type="pt",
    ).images
print(tuple(image.shape))
""".replace("{prompt}", PROMPT)


TRANSFORMER_ONLY = """
import sys, torch
from nodes.flux.handles import ModelHandle
from nodes.flux.provider import load_handle
path, size = sys.argv[1], int(sys.argv[2])
loaded = load_handle(ModelHandle("FLUX_MODEL", "bench", path, "none", "auto"), torch.device("cpu"))
m, dtype, tokens, text = loaded.module, loaded.dtype, (size // 16) ** 2, 64
c = m.config
with torch.no_grad():
    m(hidden_states=torch.randn(1, tokens, c.in_channels, dtype=dtype),
      encoder_hidden_states=torch.randn(1, text, c.joint_attention_dim, dtype=dtype),
      pooled_projections=torch.randn(1, c.pooled_projection_dim, dtype=dtype),
      timestep=torch.tensor([0.5], dtype=dtype), img_ids=torch.zeros(tokens, 3), txt_ids=torch.zeros(text, 3),
      guidance=torch.tensor([3.5]) if c.guidance_embeds else None, return_dict=False)
"""

T5_ONLY = """
import sys, torch
from nodes.flux.encode import t5_embeds
from nodes.flux.handles import ModelHandle
from nodes.flux.provider import load_handle
loaded = load_handle(ModelHandle("T5", "bench", sys.argv[1], sys.argv[2], "auto"), torch.device("cpu"))
with torch.no_grad():
    print(tuple(t5_embeds(loaded, "{prompt}", 512).shape))
""".replace("{prompt}", PROMPT)


def single_files(path: Path, models_dir: Path) -> dict[str, Path]:
    """The medium transformer as ComfyUI single files: bf16, fp8 e4m3fn, GGUF Q8_0 (cached)."""
    import torch
    from diffusers import FluxTransformer2DModel

    from nodes.flux.formats import writers

    folder = models_dir / "diffusion_models"
    files = {
        "bf16": folder / "medium-bf16.safetensors",
        "fp8": folder / "medium-fp8_e4m3fn.safetensors",
        "gguf": folder / "medium-Q8_0.gguf",
    }
    if all(f.is_file() for f in files.values()):
        return files
    model = FluxTransformer2DModel.from_pretrained(path, subfolder="transformer")
    writers.write_bfl_transformer(model, files["bf16"], dtype=torch.bfloat16)
    writers.write_bfl_transformer(model, files["fp8"], dtype=torch.bfloat16, fp8=torch.float8_e4m3fn)
    writers.write_gguf_transformer(model, files["gguf"], "Q8_0")
    return files


def child_main(cmd: list[str]) -> None:
    """Run `cmd` as this process's only child and print its peak RSS in bytes (Linux reports
    ru_maxrss in KiB)."""
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"rc": proc.returncode, "peak": peak, "stderr": proc.stderr[-4000:]}))


def peak_rss(cmd: list[str]) -> int:
    """Peak RSS of `cmd`, measured in a fresh wrapper process so that no other child counts."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(cmd)], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"command failed ({result['rc']}): {' '.join(cmd)}\n{result['stderr']}")
    return result["peak"]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def ensure_model(models_dir: Path, rebuild: bool) -> Path:
    from nodes.flux.demo import build_tiny_flux

    path = models_dir / "diffusers" / MODEL_NAME
    if rebuild or not (path / "model_index.json").is_file():
        print(f"building the medium random FLUX pipeline in {path} ...", flush=True)
        build_tiny_flux(path, seed=0, preset="medium")
    return path


def fluxloom_cmd(
    models_dir: Path, out_dir: Path, size: int, steps: int, t5_quant: str, flux_quant: str = "none"
) -> list[str]:
    api = json.loads((ROOT / "workflows" / "flux-dev-lowvram-8bit.api.json").read_text())
    sets = []
    for nid, node in api.items():
        inputs, kind = node["inputs"], node["class_type"]
        if "source" in inputs:
            sets.append(f"{nid}.source={MODEL_NAME}")
        if kind == "LoadT5-8bit":
            sets.append(f"{nid}.quantization={t5_quant}")
        if kind == "LoadFluxTransformer":
            sets.append(f"{nid}.quantization={flux_quant}")
        if kind == "EmptyLatent16ch":
            sets += [f"{nid}.width={size}", f"{nid}.height={size}"]
        if kind == "FluxSampler":
            sets.append(f"{nid}.steps={steps}")
        if kind == "EncodePrompt":
            sets.append(f"{nid}.prompt={PROMPT}")
    cmd = [sys.executable, "-m", "server.cli", "run", "flux-dev-lowvram-8bit", "--models", str(models_dir)]
    cmd += ["--output-dir", str(out_dir), "--input-dir", str(out_dir / "input"), "--json"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image width and height (default 256)")
    ap.add_argument("--steps", type=int, default=4, help="sampling steps (default 4)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached medium model")
    ap.add_argument("--phases-only", action="store_true", help="only rows (f)-(n)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    models_dir = RESULTS / "memory-models"
    path = ensure_model(models_dir, args.rebuild)
    subfolders = ("text_encoder", "text_encoder_2", "transformer", "vae")
    parts = {sub: folder_bytes(path / sub) for sub in subfolders}
    phase1 = parts["text_encoder"] + parts["text_encoder_2"]
    phase2 = parts["transformer"] + parts["vae"]
    total = phase1 + phase2
    larger = max(phase1, phase2)
    print(f"medium FLUX pipeline ({path}), fp32 weights:")
    for sub, n in parts.items():
        print(f"  {sub:<16}{mib(n)}")
    print(f"  {'total':<16}{mib(total)}")
    print(f"  phase 1 (CLIP + T5)         {mib(phase1)}")
    print(f"  phase 2 (transformer + VAE) {mib(phase2)}   <- larger phase")
    assert total >= 10**9 and parts["transformer"] > parts["text_encoder_2"]

    if args.phases_only:
        base = peak_rss([sys.executable, "-c", BARE])
        print("targets met" if phase_rows(path, models_dir, args.size, base) else "TARGETS MISSED")
        return
    out = RESULTS / "memory-out"
    print(f"\nrunning {args.size}x{args.size}, {args.steps} steps, each in its own process ...", flush=True)
    peaks = {
        "a": peak_rss([sys.executable, "-c", BARE]),
        "b": peak_rss([sys.executable, "-c", PIPELINE, str(path), str(args.size), str(args.steps)]),
        "c": peak_rss(fluxloom_cmd(models_dir, out, args.size, args.steps, "none")),
        "d": peak_rss(fluxloom_cmd(models_dir, out, args.size, args.steps, "int8 (bitsandbytes)")),
        "e": peak_rss(fluxloom_cmd(models_dir, out, args.size, args.steps, INT8, INT8)),
    }
    labels = {
        "a": "bare process (imports only)",
        "b": "diffusers FluxPipeline, all at once",
        "c": "fluxloom two-phase, none",
        "d": "fluxloom two-phase, int8 T5",
        "e": "fluxloom two-phase, int8 T5 + FLUX",
    }
    base = peaks["a"]
    print("\npeak RSS                               peak         above (a)    / larger phase")
    for key, label in labels.items():
        above = peaks[key] - base
        ratio = "" if key == "a" else f"{above / larger:6.3f}x"
        print(f"  ({key}) {label:<32}{mib(peaks[key])}  {mib(above)}   {ratio}")
    two_phase = (peaks["c"] - base) / larger
    print(f"\n(c) above baseline / larger phase's weights = {two_phase:.3f}x (target <= {TARGET}x)")
    print(f"(c) above baseline / (b) above baseline     = {(peaks['c'] - base) / (peaks['b'] - base):.3f}x")
    print(f"(d) above baseline / (b) above baseline     = {(peaks['d'] - base) / (peaks['b'] - base):.3f}x")
    print(f"(e) above baseline / (b) above baseline     = {(peaks['e'] - base) / (peaks['b'] - base):.3f}x")
    print(f"(b) above baseline / all weights            = {(peaks['b'] - base) / total:.3f}x")
    ok = two_phase <= TARGET
    ok &= phase_rows(path, models_dir, args.size, base)
    print("targets met" if ok else "TARGETS MISSED")


def xxl_shaped_t5(models_dir: Path) -> Path:
    """A random T5 encoder with T5-XXL's proportions (d_ff = 2.5 x d_model, as 10,240 / 4,096)
    and its vocabulary, 0.48 B parameters, as a ComfyUI-style fp32 single file (cached)."""
    path = models_dir / "text_encoders" / "t5-xxl-shaped-fp32.safetensors"
    if path.is_file():
        return path
    import torch
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel

    from nodes.flux.formats import writers

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=32128, d_model=1536, d_kv=64, d_ff=3840, num_layers=16, num_heads=24,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
    )  # fmt: skip
    print(f"building a T5-XXL-shaped random T5 in {path} ...", flush=True)
    model = T5EncoderModel(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({k: v.contiguous() for k, v in writers.text_encoder_state(model).items()}, partial)
    partial.replace(path)
    return path


def phase_rows(path: Path, models_dir: Path, size: int, base: int) -> bool:
    """Rows (f)-(n): each phase alone, by the format or quantization of its model."""
    files = single_files(path, models_dir)
    xxl = xxl_shaped_t5(models_dir)
    print("\neach phase alone, peak RSS above (a):")
    rows = {
        "f": (
            "transformer, bf16 single file",
            [sys.executable, "-c", TRANSFORMER_ONLY, str(files["bf16"]), str(size)],
        ),
        "g": (
            "transformer, fp8 e4m3fn file",
            [sys.executable, "-c", TRANSFORMER_ONLY, str(files["fp8"]), str(size)],
        ),
        "h": (
            "transformer, GGUF Q8_0 file",
            [sys.executable, "-c", TRANSFORMER_ONLY, str(files["gguf"]), str(size)],
        ),
        "i": ("phase 1: T5 unquantized", [sys.executable, "-c", T5_ONLY, str(path), "none"]),
        "j": ("phase 1: T5 int8 (bitsandbytes)", [sys.executable, "-c", T5_ONLY, str(path), INT8]),
        "k": ("phase 1: T5 int8 (torchao)", [sys.executable, "-c", T5_ONLY, str(path), INT8_TORCHAO]),
        "l": ("T5-XXL-shaped, unquantized", [sys.executable, "-c", T5_ONLY, str(xxl), "none"]),
        "m": ("T5-XXL-shaped, int8 (bitsandbytes)", [sys.executable, "-c", T5_ONLY, str(xxl), INT8]),
        "n": ("T5-XXL-shaped, int8 (torchao)", [sys.executable, "-c", T5_ONLY, str(xxl), INT8_TORCHAO]),
    }
    above = {}
    for key, (label, cmd) in rows.items():
        above[key] = peak_rss(cmd) - base
        print(f"  ({key}) {label:<36}{mib(above[key])}")
    fp8, gguf = above["g"] / above["f"], above["h"] / above["f"]
    bnb, torchao = above["j"] / above["i"], above["k"] / above["i"]
    print(f"(g) fp8 / (f) bf16 transformer peak        = {fp8:.3f}x")
    print(f"(h) GGUF Q8_0 / (f) bf16 transformer peak  = {gguf:.3f}x")
    print(f"(j) int8 bnb T5 / (i) unquantized T5 phase = {bnb:.3f}x (medium T5, for comparison)")
    print(f"(k) int8 torchao T5 / (i) unquantized      = {torchao:.3f}x (medium T5, for comparison)")
    xxl_bnb, xxl_torchao = above["m"] / above["l"], above["n"] / above["l"]
    print(f"(m) int8 bnb / (l) unquantized, XXL-shaped = {xxl_bnb:.3f}x (target <= {T5_TARGET}x)")
    print(f"(n) torchao / (l) unquantized, XXL-shaped  = {xxl_torchao:.3f}x (target <= {T5_TARGET}x)")
    return max(xxl_bnb, xxl_torchao) <= T5_TARGET


if __name__ == "__main__":
    main()
