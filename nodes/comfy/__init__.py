"""ComfyUI's core FLUX nodes, with ComfyUI's class names, inputs and semantics, and the
sampling maths they run on (samplers, schedulers, noise, guiders)."""
