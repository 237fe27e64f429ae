"""fluxloom: node graph editor and execution server for FLUX.1."""

__version__ = "0.1.0"
