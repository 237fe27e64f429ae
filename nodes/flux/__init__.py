"""FLUX.1 nodes: loaders, prompt encoding, latents, sampling, VAE and offloading; and the FLUX
model policy (nodes.flux.provider) that the engine's generic model manager is given at start-up."""
