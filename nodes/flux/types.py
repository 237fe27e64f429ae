"""The socket types FLUX nodes exchange, and the Python value that travels on each.

Loader outputs are `nodes.flux.handles.ModelHandle`s (names of weights, not weights); the model
manager turns a handle into a loaded module when a consuming node asks for it.
"""

from nodes.base import socket_type

# CLIP-L alone: ComfyUI's "CLIP" is the whole text-encoder bundle (nodes/comfy/types.py), a
# different value, so the two carry different names and never connect by mistake.
CLIP_L = socket_type("CLIP_L", "ModelHandle of a CLIP-L text encoder and its tokenizer")
T5 = socket_type("T5", "ModelHandle of a T5-XXL text encoder and its tokenizer")
FLUX_MODEL = socket_type("FLUX_MODEL", "ModelHandle of a FLUX.1 transformer")
VAE = socket_type("VAE", "ModelHandle of a 16-channel FLUX VAE")
CONDITIONING = socket_type(
    "CONDITIONING",
    "nodes.flux.encode.Conditioning: T5 embeddings [B, L, D], CLIP pooled [B, D'], text ids [L, 3]",
)
LATENT = socket_type(
    "LATENT",
    "dict {'samples': float tensor [B, 16, H/8, W/8]} (unpacked), plus 'posterior' after VAEEncode",
)

# What ModelOffload takes: any model a loader made.
ANY_MODEL = CLIP_L | T5 | FLUX_MODEL | VAE
