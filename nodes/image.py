"""Image nodes: LoadImage from the input folder, SaveImage / PreviewImage as PNG files.

IMAGE values are float tensors [B, H, W, C] in 0..1 (ComfyUI's convention). Conversions to and
from 8-bit follow diffusers' VaeImageProcessor (x / 255 in float32 on the way in; x * 255 rounded
to nearest on the way out), so a saved PNG equals FluxPipeline's PIL image pixel for pixel.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from nodes.base import (
    Combo,
    Input,
    NodeContext,
    NodeEnv,
    NodeResult,
    Output,
    Socket,
    String,
    node,
    socket_type,
)

IMAGE = socket_type("IMAGE", "float tensor [B, H, W, C] in 0..1 (C is 3, or 1 or 4)")
MASK = socket_type("MASK", "float tensor [B, H, W] in 0..1 (1 = masked)")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# --- loading --------------------------------------------------------------------------------


def input_images(env: NodeEnv | None) -> list[str]:
    """Image files under the input folder, as paths relative to it (subfolders with '/')."""
    if env is None or not Path(env.input_dir).is_dir():
        return []
    root = Path(env.input_dir)
    names = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            names.append(rel.as_posix())
    return sorted(names)


def input_path(env: NodeEnv, name: str) -> Path:
    """The file a LoadImage name refers to; never outside the input folder."""
    root = Path(env.input_dir).resolve()
    path = (root / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(root):
        raise ValueError(f"LoadImage: {name!r} is not inside the input folder")
    return path


def _image_hash(env: NodeEnv, image: str, **_) -> str:
    """Cache fingerprint: the file's content, so that replacing an input image re-runs."""
    try:
        return hashlib.blake2b(input_path(env, image).read_bytes(), digest_size=16).hexdigest()
    except (OSError, ValueError):
        return "unreadable"  # the node itself reports the problem, naming the file


def pil_to_image(img: Image.Image) -> torch.Tensor:
    """PIL → IMAGE [1, H, W, 3] float32, as diffusers' pil_to_numpy (uint8 / 255 in float32)."""
    if img.mode == "I" or img.mode.startswith("I;16"):
        # 16-bit grayscale (PNG, TIFF): PIL's convert("RGB") clips every value above 255 to
        # white instead of scaling, so scale the 0..65535 range down here.
        gray = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
        return torch.from_numpy(np.repeat(gray[..., None], 3, axis=-1))[None]
    array = np.array(img.convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(array)[None]


def read_image(path: Path, name: str) -> torch.Tensor:
    """The IMAGE of an input file."""
    return read_image_and_mask(path, name)[0]


def read_image_and_mask(path: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The IMAGE and MASK of an input file: the mask is 1 - alpha where the image has alpha (as
    ComfyUI's LoadImage makes it), else a 64x64 block of zeros (ComfyUI's "no mask")."""
    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of an animation
            img = ImageOps.exif_transpose(img)
            return pil_to_image(img), _mask_of(img)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"LoadImage: input image {name!r} does not exist") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"LoadImage: cannot read input image {name!r}: {exc}") from exc


def _mask_of(img: Image.Image) -> torch.Tensor:
    if "A" in img.getbands():
        alpha = np.array(img.getchannel("A")).astype(np.float32) / 255.0
        return (1.0 - torch.from_numpy(alpha))[None]
    return torch.zeros((1, 64, 64), dtype=torch.float32)


@node(
    "LoadImage",
    category="image",
    display_name="Load Image",
    description="An image from the input folder (upload one with the button), as an IMAGE and its MASK.",
    inputs=[Input("image", Combo(choices=input_images, image_upload=True))],
    outputs=[Output(IMAGE, "IMAGE"), Output(MASK, "MASK")],
    fingerprint=_image_hash,
)
def load_image(ctx: NodeContext, image: str) -> tuple[torch.Tensor, torch.Tensor]:
    return read_image_and_mask(input_path(ctx.env, image), image)


# --- saving ---------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE → uint8 [B, H, W, C], rounding to nearest as diffusers' numpy_to_pil does."""
    array = images.detach().cpu().float().numpy()
    # Clipped first: a value past 0..1 would otherwise wrap around in uint8 (1.1 → 25, dark).
    return (np.nan_to_num(array.clip(0.0, 1.0)) * 255).round().astype("uint8")


def split_prefix(root: Path, prefix: str) -> tuple[Path, str, str]:
    """filename_prefix "cats/run" → (folder, "cats", "run"); never a folder outside root."""
    prefix = (prefix or "").strip().replace("\\", "/")
    if not prefix or prefix.endswith("/"):
        raise ValueError(f"filename_prefix {prefix!r} needs a file name part (e.g. 'fluxloom')")
    if prefix.startswith("/") or re.match(r"^[A-Za-z]:", prefix) or ".." in prefix.split("/"):
        raise ValueError(f"filename_prefix {prefix!r} must stay inside the output folder")
    parts = [part for part in prefix.split("/") if part not in ("", ".")]
    if not parts:
        raise ValueError(f"filename_prefix {prefix!r} needs a file name part (e.g. 'fluxloom')")
    *folders, name = parts
    subfolder = "/".join(folders)
    folder = (root / subfolder).resolve() if subfolder else root.resolve()
    if not folder.is_relative_to(root.resolve()):
        raise ValueError(f"filename_prefix {prefix!r} must stay inside the output folder")
    return folder, subfolder, name


def next_counter(folder: Path, name: str) -> int:
    pattern = re.compile(re.escape(name) + r"_(\d+)_\.png$")
    found = [int(m.group(1)) for p in folder.glob("*.png") if (m := pattern.match(p.name))]
    return max(found, default=0) + 1


def png_metadata(prompt: dict | None, workflow: dict | None) -> PngInfo:
    """PngInfo with `prompt` and `workflow` tEXt chunks, as ComfyUI writes them (and as
    `fluxloom run` and the canvas read them back)."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if workflow is not None:
        info.add_text("workflow", json.dumps(workflow))
    return info


def write_pngs(
    images: torch.Tensor, root: Path, prefix: str, kind: str, prompt: dict | None, workflow: dict | None
) -> list[dict]:
    """Write each image as `{name}_{counter:05}_.png`, never overwriting a file."""
    root.mkdir(parents=True, exist_ok=True)
    folder, subfolder, name = split_prefix(root, prefix)
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_counter(folder, name)
    info = png_metadata(prompt, workflow)
    results = []
    for pixels in to_uint8(images):
        img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        while True:
            filename = f"{name}_{counter:05}_.png"
            counter += 1
            try:
                with open(folder / filename, "xb") as f:  # exclusive: a file that appeared is kept
                    img.save(f, format="PNG", pnginfo=info, compress_level=4)
                break
            except FileExistsError:
                continue
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return results


def check_image_tensor(images, where: str) -> torch.Tensor:
    """An IMAGE as every node takes it: a float tensor [B, H, W, C] (C 1, 3 or 4) in 0..1."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = list(getattr(images, "shape", [])) or type(images).__name__
        raise ValueError(f"{where}: images must be an IMAGE tensor [B, H, W, C] in 0..1, got {shape}")
    return images


@node(
    "SaveImage",
    category="image",
    display_name="Save Image",
    description="Save images as PNG files in the output folder, with the workflow inside them.",
    inputs=[
        Input("images", Socket(IMAGE)),
        Input(
            "filename_prefix",
            String(default="fluxloom"),
            tooltip="file name start; may include subfolders of the output folder, e.g. cats/run",
        ),
    ],
    output_node=True,
)
def save_image(ctx: NodeContext, images: torch.Tensor, filename_prefix: str) -> NodeResult:
    check_image_tensor(images, "SaveImage")
    workflow = ctx.extra_pnginfo.get("workflow") if ctx.extra_pnginfo else None
    saved = write_pngs(
        images, Path(ctx.env.output_dir), filename_prefix, "output", ctx.prompt or None, workflow
    )
    return NodeResult(ui={"images": saved})


@node(
    "PreviewImage",
    category="image",
    display_name="Preview Image",
    description="Show images on the node without keeping them (temporary PNGs).",
    inputs=[Input("images", Socket(IMAGE))],
    output_node=True,
)
def preview_image(ctx: NodeContext, images: torch.Tensor) -> NodeResult:
    check_image_tensor(images, "PreviewImage")
    prefix = f"fluxloom_temp_{secrets.token_hex(3)}"
    workflow = ctx.extra_pnginfo.get("workflow") if ctx.extra_pnginfo else None
    saved = write_pngs(images, Path(ctx.env.temp_dir), prefix, "temp", ctx.prompt or None, workflow)
    return NodeResult(ui={"images": saved})
