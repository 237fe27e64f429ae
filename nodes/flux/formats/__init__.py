"""Single-file FLUX model formats: what ComfyUI users have on disk, loaded into the same
diffusers modules as a diffusers pipeline folder.

Public functions (transformer and VAE here; see also text_encoders.py — `load_text_encoder_file`
for single-file CLIP-L and T5 with the shipped tokenizers —, detect.py — `detect_file`, what a
file is, by content — and discovery.py — `find_model_files`, ComfyUI's folders and
extra_model_paths.yaml):

- `load_transformer_file(path, quantization, dtype, device) -> FluxTransformer2DModel`
  (bfl_transformer.py): BFL or diffusers key layout, bf16/fp16/fp32, fp8 e4m3fn/e5m2, scaled fp8,
  GGUF (Q8_0, Q4_0, K-quants, ...), alone or the `model.diffusion_model.` part of an all-in-one
  checkpoint. Dimensions come from the tensors; streamed one tensor at a time; every
  quantization choice of nodes.flux.quantization works on the CPU; fp8 stays 8-bit and GGUF
  stays quantized in memory with quantization "none".
- `estimate_file_bytes(path, quantization, dtype, device="cpu", part="transformer") -> int`
  (bfl_transformer.py): the loaded size, from the header alone, for the model manager
  (part="vae" for a VAE file or an all-in-one's VAE).
- `load_vae_file(path, dtype, device) -> AutoencoderKL` (bfl_vae.py): `ae.safetensors` (BFL/LDM
  layout) or the `vae.` part of an all-in-one checkpoint.
- `split_checkpoint(path) -> {"transformer"|"vae"|"clip_l"|"t5xxl": Part}` (checkpoint_split.py):
  the parts of an all-in-one file, each read with its prefix removed.
- `fp8_linear(weight, scale, bias, compute_dtype)`, `is_fp8(dtype)` (fp8.py): an fp8 Linear that
  stays 8-bit, for any loader with fp8 weights (T5).
- writers.py: our models written out in each of these formats (tests, demo files):
  write_bfl_transformer (bf16/fp8/scaled fp8), write_diffusers_transformer, write_bfl_vae,
  write_all_in_one, write_gguf_transformer (Q8_0, Q4_0, Q4_K).

How: checkpoint_split.py reads files one tensor at a time (fp8 included) and splits all-in-one
files by prefix; bfl_transformer.py / bfl_vae.py infer the config and give the key conversion
as a plan of `Piece`s; streaming.py fills a meta-built model from a plan; gguf_transformer.py
reads GGUF files; fp8.py holds Fp8Linear.

`dtype` is a torch dtype or "auto"/"bf16"/"fp16"/"fp32". Errors are `FormatError` (a
nodes.flux.checkpoint.CheckpointError) with a message that names the file and the problem.
"""

from nodes.flux.formats.bfl_transformer import estimate_file_bytes, load_transformer_file
from nodes.flux.formats.bfl_vae import load_vae_file
from nodes.flux.formats.checkpoint_split import FormatError, split_checkpoint
from nodes.flux.formats.fp8 import fp8_linear, is_fp8

__all__ = [
    "FormatError",
    "estimate_file_bytes",
    "fp8_linear",
    "is_fp8",
    "load_transformer_file",
    "load_vae_file",
    "split_checkpoint",
]
