"""Readers and writers of the single-file model formats artists have (ComfyUI folders, BFL, GGUF)."""
