"""Issue 25, slide formats: the OpenSlide backend (``openslide-python`` + ``openslide-bin``, from PyPI) and the
tifffile one read the same tiles from generated slides (an Aperio-layout SVS that OpenSlide's Aperio driver opens, and
a generic tiled pyramidal TIFF); ``auto`` takes OpenSlide for vendor formats; the pathology inference gives the same
nuclei with either; a file neither can read is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from conftest import ORACLE_ENV, PATHOLOGY, overrides, run_bundle
from helpers.bundle_scripts import bundle_module
from shared.data.slides import OpenInputd, PyramidTiffWSIReader, SlideImage, slide_backend, slide_reader
from shared.transforms.validation import UnusableImageError

def _tissue() -> np.ndarray:
    """1024 x 768 RGB: the demo's 512 x 512 IHC image, mirrored to fill the slide."""
    ihc = bundle_module(PATHOLOGY, "demo").source_ihc()
    top = np.concatenate([ihc, ihc[:, ::-1]], 1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], 0)[:, :768])


def write_pyramid_tiff(path: Path, pixels: np.ndarray) -> Path:
    """A generic tiled pyramidal TIFF (reduced levels as following pages), deflate-compressed."""
    with tifffile.TiffWriter(path) as tif:
        for index, factor in enumerate((1, 2, 4)):
            tif.write(pixels[::factor, ::factor].copy(), tile=(256, 256), photometric="rgb", compression="zlib",
                      metadata=None, subfiletype=1 if index else 0)
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("slides")
    pixels = _tissue()
    svs = bundle_module(PATHOLOGY, "demo").write_aperio_slide(folder / "aperio.svs", pixels)
    return {"svs": svs, "tiff": write_pyramid_tiff(folder / "pyramid.tif", pixels)}


@pytest.mark.parametrize("kind,driver", [("svs", "aperio"), ("tiff", "generic-tiff")])
def test_both_backends_read_identical_tiles(slides, kind, driver):
    path = str(slides[kind])
    assert openslide.OpenSlide.detect_format(path) == driver
    for level, size in enumerate([(1024, 768), (512, 384), (256, 192)]):
        readers = [SlideImage(path, level, backend) for backend in ("openslide", "tifffile")]
        assert all((r.height, r.width) == size for r in readers)
        for top, left, height, width in ((0, 0, 64, 64), (size[0] // 3, size[1] // 2, 97, 61),
                                         (size[0] - 40, size[1] - 70, 100, 100)):
            a, b = (r.read(top, left, height, width) for r in readers)
            assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape and np.array_equal(a, b), (kind, level, top)
        for r in readers:
            r.close()


def test_auto_takes_openslide_for_vendor_formats_and_tifffile_for_generic_tiffs(slides):
    """OpenSlide's vendor drivers for the SVS; tifffile for generic pyramidal TIFFs, since it also reads levels kept
    in sub-IFDs (which OpenSlide does not) and decodes only the tiles a region covers."""
    svs, tiff = str(slides["svs"]), str(slides["tiff"])
    assert slide_backend(svs) == "openslide" and slide_reader("auto", svs).backend == "openslide"
    assert slide_backend(tiff) == "tifffile" and isinstance(slide_reader("auto", tiff), PyramidTiffWSIReader)
    assert slide_backend(tiff, "openslide") == "openslide"  # a choice made is kept
    with pytest.raises(ValueError, match="wsi_backend must be"):
        slide_reader("bioformats")


def test_a_slide_neither_backend_can_read_is_named(tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header and nothing behind it
    for backend in ("auto", "openslide", "tifffile"):
        with pytest.raises(UnusableImageError, match=rf"{broken}: not a readable"):
            OpenInputd("image", wsi_backend=backend)({"image": str(broken)})


@pytest.mark.slow
def test_inference_finds_the_same_nuclei_with_either_backend(slides, tmp_path):
    documents = {}
    for backend in ("openslide", "tifffile"):
        args = {"dataset_dir": str(slides["svs"]), "stain": "he", "wsi_backend": backend, "level": "1",
                "output_dir": str(tmp_path / backend), "handlers": "[]", "checkpoint": "None",
                "network_def": "{'_target_': 'oracle.DarkNucleiHoVerNet'}", "regions#progress": "False"}
        run_bundle(["run", "--config_file", str(PATHOLOGY / "configs" / "inference.json"), *overrides(args)],
                   cwd=tmp_path, env=ORACLE_ENV)
        documents[backend] = json.loads((tmp_path / backend / "aperio_nuclei.json").read_text())
    assert documents["openslide"]["nuclei"] == documents["tifffile"]["nuclei"]
    assert documents["openslide"]["kind"] == "slide" and documents["openslide"]["downsample"] == {"x": 2.0, "y": 2.0}
    assert documents["openslide"]["num_nuclei"] > 0
