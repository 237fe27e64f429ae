"""FLUX.1 nodes: loaders, prompt encoding, latents, sampling, VAE and offloading."""
