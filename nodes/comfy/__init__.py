"""ComfyUI's FLUX sampling (model sampling, schedulers, samplers, noise, guiders) as pure functions."""
