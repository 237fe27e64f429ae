"""The socket types of ComfyUI's core nodes that FLUX's own nodes do not already declare, and the
Python value that travels on each. Types that mean the same thing in both vocabularies are one
type (LATENT, IMAGE, CONDITIONING, VAE: see nodes/flux/types.py and nodes/image.py)."""

from nodes.base import socket_type
from nodes.image import MASK  # noqa: F401  (declared with IMAGE)

# ComfyUI's CLIP is the text-encoder bundle a model uses (for FLUX: CLIP-L and T5 together); our
# own nodes' CLIP-L alone is "CLIP_L" (nodes/flux/types.py).
CLIP = socket_type("CLIP", "the text encoders of a model: FLUX's CLIP-L and T5 handles together")
MODEL = socket_type("MODEL", "a FLUX transformer handle with its sampling settings and patches (LoRAs)")
NOISE = socket_type("NOISE", "a noise source: seeded noise of a latent's shape (or none)")
SAMPLER = socket_type("SAMPLER", "a sampler: a k-diffusion-style function (model, x, sigmas, ...)")
SIGMAS = socket_type("SIGMAS", "float tensor [steps + 1] of noise levels, ending in 0")
GUIDER = socket_type("GUIDER", "a guider: a model with its conditioning and CFG")
CLIP_VISION = socket_type("CLIP_VISION", "a CLIP vision encoder (not supported by fluxloom yet)")
CLIP_VISION_OUTPUT = socket_type("CLIP_VISION_OUTPUT", "CLIP vision embeddings (not supported yet)")
STYLE_MODEL = socket_type("STYLE_MODEL", "a FLUX Redux style model (not supported by fluxloom yet)")
MODEL_PATCH = socket_type("MODEL_PATCH", "a model patch such as USO's (not supported by fluxloom yet)")
