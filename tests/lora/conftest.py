"""Fixtures: a tiny random FluxTransformer2DModel (widths multiples of 64, so nf4 applies on the
CPU), its inputs, and LoRAs built on its layer shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from nodes.flux.lora_formats import LoraPiece

# One double and one single block, width 64 (2 heads x 32), MLP 256: every Linear's in-features
# is a multiple of 64.
TINY = dict(
    patch_size=1,
    in_channels=64,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=64,
    pooled_projection_dim=64,
    guidance_embeds=True,
    axes_dims_rope=(8, 12, 12),
)


@pytest.fixture(scope="session")
def base_transformer():
    """The pristine model; copy it (`fresh`), never change it."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(**TINY).eval().requires_grad_(False)


@pytest.fixture
def fresh(base_transformer):
    """A factory of copies of the base model, in a dtype."""

    def make(dtype=torch.float32):
        model = copy.deepcopy(base_transformer)
        return model if dtype == torch.float32 else model.to(dtype)

    return make


@pytest.fixture(scope="session")
def inputs():
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 16, 64, generator=g),
        encoder_hidden_states=torch.randn(1, 8, 64, generator=g),
        pooled_projections=torch.randn(1, 64, generator=g),
        timestep=torch.tensor([0.7]),
        img_ids=torch.stack(
            torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij")
        )
        .reshape(3, -1)
        .T,
        txt_ids=torch.zeros(8, 3),
        guidance=torch.tensor([3.5]),
    )


def run(model, inputs, dtype=torch.float32):
    with torch.no_grad():
        args = {
            k: v.to(dtype) if k in ("hidden_states", "encoder_hidden_states", "pooled_projections") else v
            for k, v in inputs.items()
        }
        return model(**args, return_dict=False)[0].float()


def linear_shapes(model) -> dict[str, tuple[int, int]]:
    return {
        n: (m.out_features, m.in_features) for n, m in model.named_modules() if type(m) is torch.nn.Linear
    }


def make_lora(model, names, *, rank=1, scale=1.0, seed=0, magnitude=0.5) -> dict[str, LoraPiece]:
    """Random LoRA pieces for `names` (diffusers module names of `model`). Entries are multiples
    of 1/64 so that products and power-of-two scales are exact in fp32."""
    shapes = linear_shapes(model)
    g = torch.Generator().manual_seed(seed)
    pieces = {}
    for name in names:
        out, inp = shapes[name]
        down = torch.randint(-32, 33, (rank, inp), generator=g).float() / 64 * magnitude
        up = torch.randint(-32, 33, (out, rank), generator=g).float() / 64 * magnitude
        pieces[name] = LoraPiece(down, up, scale)
    return pieces


# Layers every layout can hold (xlabs: the blocks' attention only).
ATTENTION = [
    "transformer_blocks.0.attn.to_q",
    "transformer_blocks.0.attn.to_k",
    "transformer_blocks.0.attn.to_v",
    "transformer_blocks.0.attn.to_out.0",
    "transformer_blocks.0.attn.add_q_proj",
    "transformer_blocks.0.attn.add_k_proj",
    "transformer_blocks.0.attn.add_v_proj",
    "transformer_blocks.0.attn.to_add_out",
    "single_transformer_blocks.0.attn.to_q",
    "single_transformer_blocks.0.attn.to_k",
    "single_transformer_blocks.0.attn.to_v",
]


def all_linears(model) -> list[str]:
    """Every Linear of the model: what the kohya and PEFT layouts can hold."""
    return list(linear_shapes(model))


# --- quantized copies of the model, as fluxloom's loaders make them on the CPU --------------

BACKENDS = ("int8 bitsandbytes", "nf4 bitsandbytes", "int8 torchao", "gguf Q8_0")


def quantize(model, backend: str, dtype: torch.dtype):
    """`model` with its Linear layers quantized by `backend`, in place."""
    from nodes.flux import quantization as q
    from tests.models.quantize_reference import quantize_linears

    cpu = torch.device("cpu")
    if backend == "int8 bitsandbytes":
        quantize_linears(model, q.INT8_BNB, dtype, cpu)
    elif backend == "nf4 bitsandbytes":
        quantize_linears(model, q.NF4_BNB, dtype, cpu)
    elif backend == "int8 torchao":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig())
    elif backend == "gguf Q8_0":
        gguf_q8_0(model, dtype)
    else:
        raise ValueError(backend)
    return model


def gguf_q8_0(model, dtype: torch.dtype):
    """Every Linear replaced by diffusers' GGUFLinear holding a Q8_0 weight quantized by the gguf
    package, as diffusers' GGUF loader builds them from a .gguf file."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter, _replace_with_gguf_linear

    q8 = gguf.GGMLQuantizationType.Q8_0
    plain = {n: m for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    state = {
        f"{n}.weight": GGUFParameter(
            torch.from_numpy(gguf.quants.quantize(m.weight.float().numpy(), q8)), quant_type=q8
        )
        for n, m in plain.items()
    }
    _replace_with_gguf_linear(model, dtype, state)
    for name, old in plain.items():
        layer = model.get_submodule(name)
        layer.weight = state[f"{name}.weight"]
        layer.bias = (
            None if old.bias is None else torch.nn.Parameter(old.bias.data.to(dtype), requires_grad=False)
        )
    return model
