"""ComfyUI's Sampler… nodes: a SAMPLER with its settings (eta, s_noise, r, solver_type, order),
for SamplerCustom and SamplerCustomAdvanced. KSamplerSelect gives a sampler with its defaults;
these give the same samplers with the settings a workflow chose. `noise_device` picks the
sampler's `_gpu` variant (its Brownian-tree noise drawn on the model's device) or the CPU one,
as ComfyUI does; on a CPU-only machine the two are the same numbers.

Inputs and defaults as comfy_extras/nodes_custom_sampler.py (a125cd8). A node is only declared
when fluxloom has its sampler (nodes/comfy/samplers.py), so a workflow never meets one that
fails at run time."""

from __future__ import annotations

from nodes.base import Combo, Float, Input, Int, NodeContext, Output, node
from nodes.comfy import samplers
from nodes.comfy.types import SAMPLER
from nodes.comfy.values import Sampler

CATEGORY = "sampling/custom_sampling/samplers"
ETA = Input("eta", Float(default=1.0, min=0.0, max=100.0, step=0.01))
S_NOISE = Input("s_noise", Float(default=1.0, min=0.0, max=100.0, step=0.01))
NOISE_DEVICE = Input("noise_device", Combo(("gpu", "cpu")))


def _on(name: str, noise_device: str) -> str:
    return f"{name}_gpu" if noise_device == "gpu" else name


@node(
    "SamplerEulerAncestral",
    category=CATEGORY,
    display_name="SamplerEulerAncestral",
    description="euler_ancestral with its settings: eta scales each step's fresh noise (0: plain Euler).",
    inputs=[ETA, S_NOISE],
    outputs=[Output(SAMPLER, "SAMPLER")],
)
def sampler_euler_ancestral(ctx: NodeContext, eta: float, s_noise: float) -> tuple[Sampler]:
    return (Sampler.of("euler_ancestral", eta=eta, s_noise=s_noise),)


@node(
    "SamplerDPMPP_2S_Ancestral",
    category=CATEGORY,
    display_name="SamplerDPMPP_2S_Ancestral",
    description="dpmpp_2s_ancestral with its settings.",
    inputs=[ETA, S_NOISE],
    outputs=[Output(SAMPLER, "SAMPLER")],
)
def sampler_dpmpp_2s_ancestral(ctx: NodeContext, eta: float, s_noise: float) -> tuple[Sampler]:
    return (Sampler.of("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise),)


@node(
    "SamplerDPMPP_SDE",
    category=CATEGORY,
    display_name="SamplerDPMPP_SDE",
    description="dpmpp_sde with its settings: r is where the intermediate evaluation sits in each step.",
    inputs=[ETA, S_NOISE, Input("r", Float(default=0.5, min=0.0, max=100.0, step=0.01)), NOISE_DEVICE],
    outputs=[Output(SAMPLER, "SAMPLER")],
)
def sampler_dpmpp_sde(ctx: NodeContext, eta: float, s_noise: float, r: float, noise_device: str):
    return (Sampler.of(_on("dpmpp_sde", noise_device), eta=eta, s_noise=s_noise, r=r),)


@node(
    "SamplerDPMPP_2M_SDE",
    category=CATEGORY,
    display_name="SamplerDPMPP_2M_SDE",
    description="dpmpp_2m_sde with its settings (solver_type heun: the heun variant).",
    inputs=[Input("solver_type", Combo(("midpoint", "heun"))), ETA, S_NOISE, NOISE_DEVICE],
    outputs=[Output(SAMPLER, "SAMPLER")],
)
def sampler_dpmpp_2m_sde(ctx: NodeContext, solver_type: str, eta: float, s_noise: float, noise_device: str):
    name = _on("dpmpp_2m_sde", noise_device)
    return (Sampler.of(name, eta=eta, s_noise=s_noise, solver_type=solver_type),)


@node(
    "SamplerLMS",
    category=CATEGORY,
    display_name="SamplerLMS",
    description="lms (linear multistep) of a given order.",
    inputs=[Input("order", Int(default=4, min=1, max=100))],
    outputs=[Output(SAMPLER, "SAMPLER")],
)
def sampler_lms(ctx: NodeContext, order: int) -> tuple[Sampler]:
    return (Sampler.of("lms", order=order),)


if "dpmpp_3m_sde" in samplers.SAMPLERS:

    @node(
        "SamplerDPMPP_3M_SDE",
        category=CATEGORY,
        display_name="SamplerDPMPP_3M_SDE",
        description="dpmpp_3m_sde with its settings.",
        inputs=[ETA, S_NOISE, NOISE_DEVICE],
        outputs=[Output(SAMPLER, "SAMPLER")],
    )
    def sampler_dpmpp_3m_sde(ctx: NodeContext, eta: float, s_noise: float, noise_device: str):
        return (Sampler.of(_on("dpmpp_3m_sde", noise_device), eta=eta, s_noise=s_noise),)
