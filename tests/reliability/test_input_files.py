"""Files a user hands sdopt (img2img / inpainting images, masks, LoRA files): read the way diffusers reads them,
checked before any work, never blocking on a FIFO, one clear line when they cannot be used."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_helpers import fails

from sdopt.contract.errors import SdoptError
from sdopt.contract.image_files import read_image


@pytest.mark.parametrize("mode, pixels", [
    ("I;16", np.full((8, 8), 40000, np.uint16)), ("L", np.full((8, 8), 155, np.uint8)),
    ("RGBA", np.full((8, 8, 4), 155, np.uint8)), ("P", None), ("LA", None), ("1", None)])
def test_images_read_as_diffusers_reads_them_and_16_bit_scaled(tmp_path, mode, pixels):
    from diffusers.utils import load_image

    path = tmp_path / "in.png"
    image = Image.fromarray(pixels) if pixels is not None else Image.new(mode, (8, 8), 1 if mode == "1" else 155)
    image.save(path)
    ours = read_image(path, "--image")
    assert ours.shape == (8, 8, 3) and ours.dtype == np.uint8
    if mode == "I;16":  # Pillow (and so diffusers) clips 16-bit samples to 255: sdopt scales them
        assert np.asarray(load_image(str(path))).mean() == 255
        assert abs(ours.mean() - 40000 / 257) < 1
    else:
        np.testing.assert_array_equal(ours, np.asarray(load_image(str(path))))


def test_exif_orientation_is_applied_as_diffusers_does(tmp_path):
    from diffusers.utils import load_image

    pixels = np.zeros((6, 10, 3), np.uint8)
    pixels[:, :5] = 200  # left half bright, so a turn shows
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored turned: shown 6 wide, 10 high
    path = tmp_path / "turned.png"
    image.save(path, exif=exif)
    ours = read_image(path, "--image")
    assert ours.shape == (10, 6, 3)
    np.testing.assert_array_equal(ours, np.asarray(load_image(str(path))))


def test_declared_size_is_refused_before_decoding_without_pillows_warning(tmp_path, recwarn):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    start = time.perf_counter()
    with pytest.raises(SdoptError, match="declares 12000x12000 pixels"):
        read_image(path, "--image")
    assert time.perf_counter() - start < 1 and not recwarn.list


@pytest.mark.parametrize("flag", ["--image", "--mask"])
def test_a_fifo_is_refused_without_blocking(capsys, tiny_fp32, tmp_path, flag):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "image.png")
    argv = ["run", tiny_fp32, "--prompt", "x", "--out", tmp_path / "o.png", "--image",
            fifo if flag == "--image" else tmp_path / "image.png"] + (["--mask", fifo] if flag == "--mask" else [])
    start = time.perf_counter()
    assert "not a regular file" in fails(capsys, argv)
    assert time.perf_counter() - start < 10


def test_a_mask_of_another_size_is_refused(capsys, tiny_fp32, tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "image.png")
    Image.fromarray(np.zeros((64, 32), np.uint8)).save(tmp_path / "mask.png")
    line = fails(capsys, ["run", tiny_fp32, "--prompt", "x", "--image", tmp_path / "image.png", "--mask",
                          tmp_path / "mask.png", "--out", tmp_path / "o.png"])
    assert "32x64 pixels, the --image is 64x64" in line and not (tmp_path / "o.png").exists()


def _lora_of(model: str, path, fill=None):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from sdopt.sources.source import load_source

    unet = load_source(model).pipeline.unet
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q", "to_k"]))
    layers = get_peft_model_state_dict(unet)
    if fill is not None:
        layers = {k: torch.full_like(v, fill) for k, v in layers.items()}
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name)
    return path


@pytest.mark.parametrize("case, message", [
    ("nan", "holds NaN or Inf"), ("overflow", "makes unet."), ("scale", "scale 1e+308 must be a number in"),
    ("other model", "made for another model: "), ("folder", "a folder, not a file"), ("fifo", "not a regular file"),
    ("not safetensors", "not a safetensors file")])
def test_bad_lora_files_are_one_line(capsys, tmp_path, case, message):
    path = tmp_path / "l.safetensors"
    if case == "nan":
        _lora_of("arch:tiny", path, float("nan"))
    elif case == "overflow":  # finite in the file, beyond float32 once fused at scale 100
        _lora_of("arch:tiny", path, 1e19)
    elif case == "scale":
        _lora_of("arch:tiny", path)
    elif case == "other model":
        _lora_of("tiny-shapes", path)
    elif case == "folder":
        path.mkdir()
    elif case == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    lora = f"{path}:1e308" if case == "scale" else f"{path}:100" if case == "overflow" else str(path)
    line = fails(capsys, ["compress", "--model", "arch:tiny", "--recipe", "int8", "--lora", lora, "--out",
                          tmp_path / "out"])
    assert message in line, line  # (fails: one error line, so no logged key lists from the loaders)
    assert not (tmp_path / "out").exists()


def test_a_fifo_inside_a_model_folder_is_refused_before_loading(capsys, tmp_path):
    import shutil

    from sdopt.reference.families import FAMILIES

    folder = tmp_path / "model"
    shutil.copytree(FAMILIES["tiny-shapes"].model_dir, folder)
    os.mkfifo(folder / "unet" / "extra.safetensors")
    start = time.perf_counter()
    line = fails(capsys, ["compress", "--model", folder, "--out", tmp_path / "out"])
    assert "unet/extra.safetensors is not a regular file" in line and time.perf_counter() - start < 30
