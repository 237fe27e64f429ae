"""A damaged model folder (an interrupted download: an empty or cut-off safetensors file) fails
with a message that names the file and says what to do, never with a struct/JSON error, and never
loads silently with missing weights."""

from __future__ import annotations

import pytest
import torch

from nodes.flux import quantization as q
from nodes.flux.checkpoint import CheckpointError, read_header, tensor_at
from nodes.flux.sources import ModelSourceError, estimate_bytes, load_part, stored_dtype

CPU = torch.device("cpu")


def weights(folder):
    (file,) = sorted(folder.glob("*.safetensors"))
    return file


@pytest.mark.parametrize("kind,subfolder", [("VAE", "vae"), ("CLIP", "text_encoder")])
def test_empty_weights_file_is_named(demo_path, kind, subfolder):
    file = weights(demo_path / subfolder)
    file.write_bytes(b"")
    with pytest.raises(ModelSourceError, match="not a complete safetensors file") as err:
        load_part(demo_path, kind, q.NONE, "auto", CPU)
    assert str(file) in str(err.value) and "download it again" in str(err.value)


def test_garbage_header_length_is_named_not_out_of_memory(demo_path):
    """Eight bytes of garbage as the header length must not make Python allocate exabytes
    (a MemoryError, which the executor would report as out of memory)."""
    file = weights(demo_path / "transformer")
    data = file.read_bytes()
    file.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(ModelSourceError, match="not a complete safetensors file"):
        stored_dtype(demo_path / "transformer")
    with pytest.raises(ModelSourceError, match=str(file.name)):
        estimate_bytes(demo_path / "transformer", torch.float32, q.NONE)


@pytest.mark.parametrize("choice", [q.INT8_TORCHAO, q.INT8_BNB])
def test_cut_off_transformer_is_not_loaded_with_zero_weights(demo_path, choice):
    """fluxloom's own streamed CPU loader reads the checkpoint itself: a file cut off in the
    middle of its tensor data fails there, naming the file."""
    file = weights(demo_path / "transformer")
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - len(data) // 3])
    with pytest.raises(ModelSourceError, match="not a complete safetensors file") as err:
        load_part(demo_path, "FLUX_MODEL", choice, "fp32", CPU)
    assert str(file) in str(err.value)


def test_file_shrinking_while_read_fails(demo_path, tmp_path):
    """The tensor read itself checks that it got every byte."""
    file = weights(demo_path / "transformer")
    header, base = read_header(file)
    key, info = max(header.items(), key=lambda kv: kv[1]["data_offsets"][1])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(file.read_bytes()[: base + info["data_offsets"][1] - 4])
    with open(cut, "rb") as fh, pytest.raises(CheckpointError, match="ends before its tensor data"):
        tensor_at(fh, base, info)


def test_intact_files_still_load(demo_path):
    loaded = load_part(demo_path, "FLUX_MODEL", q.INT8_TORCHAO, "fp32", CPU)
    assert loaded.module is not None
    assert stored_dtype(demo_path / "vae") == torch.float32


@pytest.mark.parametrize("choice", [q.INT8_TORCHAO, q.NF4_BNB])
def test_missing_transformer_weights_are_named_without_a_quantization_hint(demo_path, choice):
    """A transformer folder with its config but no weights is an incomplete download, not a
    quantization problem: no advice to pick another quantization (or the same one)."""
    weights(demo_path / "transformer").unlink()
    with pytest.raises(ModelSourceError, match="has no weight for layer") as err:
        load_part(demo_path, "FLUX_MODEL", choice, "fp32", CPU)
    assert "is the download complete?" in str(err.value) and "choose" not in str(err.value)


def test_a_failing_torchao_load_does_not_advise_torchao(demo_path):
    from nodes.flux.sources import _quantization_failure

    err = _quantization_failure("T5", q.INT8_TORCHAO, CPU, RuntimeError("boom"))
    assert isinstance(err, q.QuantizationError) and "boom" in str(err)
    assert f"choose {q.INT8_BNB!r} or 'none'" in str(err)
    err = _quantization_failure("T5", q.INT8_BNB, CPU, RuntimeError("boom"))
    assert f"choose {q.INT8_TORCHAO!r} or 'none'" in str(err)


@pytest.mark.parametrize(
    "kind,remove,loader,inputs",
    [
        ("CLIP", "tokenizer", "LoadCLIP", {"dtype": "auto"}),
        ("T5", "tokenizer_2", "LoadT5-8bit", {"quantization": q.NONE, "dtype": "auto"}),
        ("VAE", "vae/config.json", "LoadVAE", {"dtype": "auto"}),
    ],
)
def test_incomplete_folder_fails_in_the_loader_node(
    models_dir, demo_path, tmp_path, kind, remove, loader, inputs
):
    """Without its tokenizer folder transformers builds an empty tokenizer (model_max_length 1e30)
    and encoding fails later with "int too big to convert": the loader node stops first."""
    import shutil

    import nodes
    from nodes.base import NodeContext, NodeEnv
    from nodes.flux.demo import DEMO_NAME
    from server.runtime import RuntimeConfig, attach_models

    target = demo_path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    env = NodeEnv(models_dir=models_dir, output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    attach_models(env, RuntimeConfig(models_dir=models_dir, ensure_demo_model=False))
    ctx = NodeContext(env=env, node_id="1")
    with pytest.raises(ModelSourceError, match=f"is incomplete: the {kind} needs {remove}"):
        nodes.load_all().get(loader).run(ctx, source=DEMO_NAME, **inputs)
    with pytest.raises(ModelSourceError, match="download the model again"):
        load_part(demo_path, kind, q.NONE, "auto", CPU)


@pytest.mark.parametrize("kind,subfolder", [("VAE", "vae"), ("T5", "text_encoder_2")])
def test_cut_off_file_is_named_whatever_the_dtype(demo_path, kind, subfolder):
    """With an explicit dtype nothing reads the headers for the dtype: the libraries would
    report the damaged file in their own words; the loader names it first."""
    file = weights(demo_path / subfolder)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelSourceError, match="not a complete safetensors file") as err:
        load_part(demo_path, kind, q.NONE, "fp32", CPU)
    assert str(file) in str(err.value)
