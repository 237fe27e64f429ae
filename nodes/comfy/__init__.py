"""ComfyUI's core FLUX nodes, with ComfyUI's class names, inputs and semantics."""
