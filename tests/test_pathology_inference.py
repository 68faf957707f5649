"""The pathology bundle's chained inference (IHC -> H&E -> HoVer-Net nuclei) through configs/inference.json and
MONAI's CLI: a demo tile with the real networks (tiny generator, freshly initialised HoVer-Net), H&E inputs without
the generator, nuclei across HoVer-Net window seams and slide regions found once (an oracle HoVer-Net that sees the
dark discs of synthetic images), a pyramidal TIFF at levels 0 and 1 with nuclei in level-0 coordinates, bad inputs;
and the pieces: post-processing equal to MONAI's, tile-wise slide reading, region plans, pixel conversions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.apps.pathology.transforms import HoVerNetInstanceMapPostProcessingd, HoVerNetNuclearTypePostProcessingd
from monai.transforms import Compose, ComputeHoVerMaps
from PIL import Image
from scipy import ndimage
from skimage.draw import disk, ellipse

from conftest import ORACLE_ENV, PATHOLOGY, official_schema, overrides, run_bundle
from helpers.bundle_scripts import bundle_module
from helpers.properties import check_properties
from shared.data import slides
from shared.data.integrity import save_with_sha256
from shared.networks.cyclegan import ResnetGenerator
from shared.transforms import hovernet_postprocessing as postprocessing
from shared.transforms.validation import UnusableImageError

INFERENCE = PATHOLOGY / "configs" / "inference.json"
demo = bundle_module(PATHOLOGY, "demo")
hovernet = bundle_module(PATHOLOGY, "hovernet")

ORACLE_HOVERNET = {"network_def": "{'_target_': 'oracle.DarkNucleiHoVerNet'}", "regions#progress": "False"}
TINY_GENERATOR = {"base_channels": "4", "num_residual_blocks": "1"}
BLUISH, REDDISH = (60, 40, 130), (130, 30, 60)  # the oracle types them 1 (Neoplastic) and 2 (Inflammatory)
PINK, GLASS = (236, 200, 222), (244, 244, 244)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pathology_inference")


@pytest.fixture(scope="module")
def weights(work) -> dict[str, str]:
    """Checkpoint folders: ``real`` (a freshly initialised HoVer-Net and a tiny generator), ``oracle`` (the oracle
    has no parameters: an empty state dict, and the tiny generator), ``he_only`` (no generator at all)."""
    generator = ResnetGenerator(base_channels=4, num_residual_blocks=1).state_dict()
    torch.manual_seed(0)
    folders = {"real": {"hovernet.pt": hovernet.hovernet_fast().state_dict(), "generator_ihc_to_he.pt": generator},
               "oracle": {"hovernet.pt": {}, "generator_ihc_to_he.pt": generator},
               "he_only": {"hovernet.pt": {}}}
    for name, files in folders.items():
        for file, state in files.items():
            save_with_sha256(state, work / name / file)
    return {name: str(work / name) for name in folders}


def run_inference(args: dict[str, str], cwd: Path, oracle: bool = True, check: bool = True):
    env = ORACLE_ENV if oracle else None
    return run_bundle(["run", "--config_file", str(INFERENCE), *overrides(args)], cwd=cwd, env=env, check=check)


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def check_outputs(output_dir: str | Path, stem: str, size: tuple[int, int], downsample: float = 1.0) -> dict:
    """Every output of ``stem`` is written and readable, and the nuclei agree between the instance map, the type
    map, the JSON and the GeoJSON; ``size`` is the processing level's (height, width). Return the JSON."""
    output = Path(output_dir)
    document = json.loads((output / f"{stem}_nuclei.json").read_text())
    geojson = json.loads((output / f"{stem}_nuclei.geojson").read_text())
    instances = tifffile.imread(output / f"{stem}_instances.tif")
    types = tifffile.imread(output / f"{stem}_types.tif")
    assert instances.shape == types.shape == size and instances.dtype == np.int32 and types.dtype == np.uint8
    for name in ("he", "overlay"):
        with Image.open(output / f"{stem}_{name}.png") as image:
            image.load()
            assert image.size == (size[1], size[0]) and image.mode == "RGB"
    nuclei = document["nuclei"]
    ids = [n["id"] for n in nuclei]
    assert ids == list(range(1, len(nuclei) + 1)) and document["num_nuclei"] == len(nuclei)
    assert set(np.unique(instances)) - {0} == set(ids)
    assert document["downsample"] == {"x": downsample, "y": downsample}
    if ids:
        areas = ndimage.sum_labels(np.ones_like(instances), instances, ids)
        centres = ndimage.center_of_mass(instances > 0, instances, ids)
        for n, area, (row, column) in zip(nuclei, areas, centres):
            assert n["area"] == area
            assert set(np.unique(types[instances == n["id"]])) == {n["type"]}
            assert n["type_name"] == document["type_names"][str(n["type"])]
            assert np.allclose(n["centroid"], [column * downsample, row * downsample], atol=0.01)
            assert 0 <= n["type_probability"] <= 1 and len(n["contour"]) >= 3
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == len(nuclei)
    for feature, n in zip(geojson["features"], nuclei):
        ring = feature["geometry"]["coordinates"][0]
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        assert ring[0] == ring[-1] and ring[:-1] == n["contour"]
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        assert properties["classification"]["name"] == n["type_name"]
        assert len(properties["classification"]["color"]) == 3
        assert properties["measurements"]["Nucleus ID"] == n["id"]
    assert len({f["id"] for f in geojson["features"]}) == len(nuclei)
    return document


def discs_image(size: tuple[int, int], centres: list[tuple[int, int]], radius: int, tissue=None) -> np.ndarray:
    """An H&E-like picture: glass, pink tissue in the ``tissue`` box (everywhere without one), dark discs of
    ``radius`` at ``centres`` (row, column), bluish and reddish in turn."""
    image = np.empty((*size, 3), np.uint8)
    image[:] = GLASS if tissue is not None else PINK
    if tissue is not None:
        image[tissue[0]:tissue[2], tissue[1]:tissue[3]] = PINK
    for index, centre in enumerate(centres):
        rows, columns = disk(centre, radius, shape=size)
        image[rows, columns] = REDDISH if index % 2 == 0 else BLUISH
    return image


def match_discs(document: dict, centres: list[tuple[int, int]], scale: float = 1.0, tolerance: float = 1.0) -> None:
    """Each disc is one nucleus at its centre (level-0 pixels), typed by its colour."""
    assert document["num_nuclei"] == len(centres)
    found = np.array([n["centroid"] for n in document["nuclei"]])
    for index, (row, column) in enumerate(centres):
        distance = np.hypot(found[:, 0] - column * scale, found[:, 1] - row * scale)
        nearest = document["nuclei"][int(distance.argmin())]
        assert distance.min() <= tolerance, (row, column, found)
        assert nearest["type_name"] == ("Inflammatory" if index % 2 == 0 else "Neoplastic")


# --- the chained inference through the CLI -------------------------------------------------------------------------

@pytest.mark.slow
def test_chained_inference_on_a_demo_tile(work, weights):
    """The real networks on the default dataset (the BCI demo's IHC test tiles; one 164x164 tile, one HoVer-Net
    window): translated, segmented, every output written and consistent."""
    args = {**TINY_GENERATOR, "demo#dir": str(work / "BCI"), "demo#image_size": "164", "demo#num_train": "1",
            "demo#num_test": "1", "ckpt_dir": weights["real"], "output_dir": str(work / "demo_out")}
    run_inference(args, cwd=work, oracle=False)
    report = json.loads((work / "demo_out" / "inference_report.json").read_text())
    assert report == {"succeeded": ["00000_test_0"], "failed": []}
    document = check_outputs(work / "demo_out", "00000_test_0", (164, 164))
    source = work / "BCI" / "IHC" / "test" / "00000_test_0.png"
    assert document["image"] == str(source) and document["stain"] == "ihc" and document["kind"] == "image"
    assert not np.array_equal(_rgb(work / "demo_out" / "00000_test_0_he.png"), _rgb(source))  # translated


@pytest.mark.slow
def test_onnxruntime_backend_gives_the_eager_translation_and_maps(work, weights):
    """Both networks under ONNX Runtime: the same translated image and nuclei maps as eager PyTorch (up to rounding
    at the post-processing's thresholds)."""
    args = {**TINY_GENERATOR, "demo#dir": str(work / "BCI"), "demo#image_size": "164", "demo#num_train": "1",
            "demo#num_test": "1", "ckpt_dir": weights["real"]}
    if not (work / "demo_out" / "00000_test_0_he.png").is_file():
        run_inference({**args, "output_dir": str(work / "demo_out")}, cwd=work, oracle=False)
    run_inference({**args, "output_dir": str(work / "onnx_out"), "backend": "onnxruntime"}, cwd=work, oracle=False)
    check_outputs(work / "onnx_out", "00000_test_0", (164, 164))
    eager, onnx = (_rgb(work / folder / "00000_test_0_he.png").astype(int) for folder in ("demo_out", "onnx_out"))
    assert np.abs(eager - onnx).max() <= 1
    maps = [tifffile.imread(work / folder / "00000_test_0_instances.tif") > 0 for folder in ("demo_out", "onnx_out")]
    assert (maps[0] == maps[1]).mean() > 0.99


# the seams of HoVer-Net fast's windows: each window's 164x164 output is stitched at multiples of 164
SEAM_DISCS = [(164, 164), (164, 328), (328, 164), (100, 50), (300, 500), (164, 492), (400, 650), (250, 250),
              (60, 600), (328, 420)]


@pytest.mark.slow
def test_stain_he_skips_the_generator_and_finds_each_nucleus_once_across_window_seams(work, weights):
    """H&E input (no generator weights exist), 700x450, discs on the windows' seams: the stitched maps are
    post-processed once, so each disc is exactly one nucleus with its whole area."""
    folder = work / "he_in"
    folder.mkdir()
    image = discs_image((450, 700), SEAM_DISCS, radius=10)
    Image.fromarray(image).save(folder / "discs.png")
    seams = range(164, 700, 164)
    assert sum(any(abs(r - s) < 10 or abs(c - s) < 10 for s in seams) for r, c in SEAM_DISCS) == 7  # cut by a seam
    args = {**ORACLE_HOVERNET, "dataset_dir": str(folder), "stain": "he", "ckpt_dir": weights["he_only"],
            "output_dir": str(work / "he_out")}
    run_inference(args, cwd=work)
    document = check_outputs(work / "he_out", "discs", (450, 700))
    assert np.array_equal(_rgb(work / "he_out" / "discs_he.png"), image)  # not translated
    match_discs(document, SEAM_DISCS)
    disc_area = len(disk((50, 50), 10)[0])
    assert all(n["area"] == disc_area for n in document["nuclei"])
    assert document["stain"] == "he" and document["regions"]["mode"] == "whole image"


# cores of 328 pixels (the default 2048 is rounded the same way): discs on core borders, window seams, and inside
SLIDE_DISCS = [(328, 328), (100, 328), (328, 100), (656, 328), (500, 500), (200, 600), (650, 650), (164, 164),
               (330, 656), (600, 170)]


@pytest.fixture(scope="module")
def pyramid(work) -> Path:
    """A 1100x800 pyramidal TIFF (levels 1100x800 and 550x400, 128x128 zlib tiles, tifffile's sub-IFD pyramid):
    tissue with dark discs on the left, glass on the right."""
    image = discs_image((800, 1100), SLIDE_DISCS, radius=14, tissue=(40, 40, 760, 720))
    folder = work / "slides"
    folder.mkdir()
    with tifffile.TiffWriter(folder / "slide.tif") as tif:
        tif.write(image, tile=(128, 128), subifds=1, photometric="rgb", compression="zlib")
        tif.write(image[::2, ::2], tile=(128, 128), subfiletype=1, photometric="rgb", compression="zlib")
    return folder / "slide.tif"


@pytest.mark.slow
@pytest.mark.parametrize("level", [0, 1])
def test_pyramidal_tiff_regions_report_each_nucleus_once_in_level0_coordinates(work, weights, pyramid, level):
    output = work / f"slide_level{level}"
    args = {**ORACLE_HOVERNET, "dataset_dir": str(pyramid), "stain": "he", "level": str(level),
            "regions#size": str(328 >> level), "ckpt_dir": weights["he_only"], "output_dir": str(output)}
    log = run_inference(args, cwd=work).stdout
    document = check_outputs(output, "slide", (800 >> level, 1100 >> level), downsample=float(2 ** level))
    assert document["kind"] == "slide" and document["level"] == level
    assert document["level0_size"] == {"height": 800, "width": 1100}
    regions = document["regions"]
    assert regions["mode"] == "regions" and regions["tissue_mask"] and regions["margin"] == 128
    assert 1 < regions["processed"] < regions["total"]  # the glass on the right is skipped
    assert f"{regions['processed']} of {regions['total']} region(s)" in log
    match_discs(document, SLIDE_DISCS, tolerance=1.0 + level)


@pytest.fixture(scope="module")
def mixed_folder(work) -> Path:
    """A 700x450 IHC image (wider than a tile, not square) among bad inputs: grayscale, RGBA (handled), 1x1,
    damaged, 16-bit TIFF (handled)."""
    folder = work / "mixed"
    folder.mkdir()
    source = demo.source_ihc()
    wide = np.concatenate([source, source[:, ::-1]], axis=1)[:450, :700]
    Image.fromarray(wide).save(folder / "wide.png")
    Image.fromarray(source[:200, :240]).convert("L").save(folder / "grey.png")
    alpha = np.full((200, 240, 1), 200, np.uint8)
    alpha[:20] = 0
    Image.fromarray(np.concatenate([source[:200, :240], alpha], axis=-1)).save(folder / "rgba.png")
    Image.fromarray(source[:1, :1]).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a PNG after all")
    tifffile.imwrite(folder / "deep.tif", source[:160, :200].astype(np.uint16) * 257, photometric="rgb")
    return folder


@pytest.fixture(scope="module")
def mixed_run(work, weights, mixed_folder):
    args = {**TINY_GENERATOR, **ORACLE_HOVERNET, "dataset_dir": str(mixed_folder), "ckpt_dir": weights["oracle"],
            "output_dir": str(work / "mixed_out")}
    return args, run_inference(args, cwd=work, check=False)


@pytest.mark.slow
def test_a_non_square_image_larger_than_a_tile_is_translated_whole(work, mixed_folder, mixed_run):
    document = check_outputs(work / "mixed_out", "wide", (450, 700))
    assert document["stain"] == "ihc" and document["regions"]["mode"] == "whole image"
    he = _rgb(work / "mixed_out" / "wide_he.png")
    assert not np.array_equal(he, _rgb(mixed_folder / "wide.png"))
    # Gaussian blending over 256x256 generator tiles: no seam where the tiles meet (tile edges at 192 + 256k)
    rows = np.abs(np.diff(he.astype(float), axis=0)).mean(axis=(1, 2))
    assert rows.max() < 8 * np.median(rows) + 1


@pytest.mark.slow
def test_bad_inputs_are_named_handled_or_failed_and_the_good_ones_written(work, mixed_folder, mixed_run):
    args, result = mixed_run
    assert result.returncode != 0
    report = json.loads((work / "mixed_out" / "inference_report.json").read_text())
    assert report["succeeded"] == ["deep", "rgba", "wide"]
    errors = {f["case"]: f["error"] for f in report["failed"]}
    assert sorted(errors) == ["broken", "grey", "tiny"]
    assert f"{mixed_folder / 'grey.png'}: a grayscale image" in errors["grey"]
    assert f"{mixed_folder / 'tiny.png'}: the image is 1x1 pixels" in errors["tiny"]
    assert f"{mixed_folder / 'broken.png'}: not a readable image file" in errors["broken"]
    assert "3 of 6 case(s) failed" in result.stdout
    assert f"{mixed_folder / 'deep.tif'}: a uint16 image (largest value" in result.stdout  # the rescaling warning
    assert f"{mixed_folder / 'rgba.png'}: RGBA image, composited over white" in result.stdout
    check_outputs(work / "mixed_out", "deep", (160, 200))
    check_outputs(work / "mixed_out", "rgba", (200, 240))
    partial = run_inference({**args, "allow_partial": "True"}, cwd=work, check=False)
    assert partial.returncode == 0, partial.stdout[-3000:]


@pytest.mark.slow
def test_inference_config_has_the_model_zoo_inference_properties(work, tmp_path):
    args = {"demo#dir": str(work / "BCI_properties"), "demo#image_size": "64", "demo#num_train": "1",
            "demo#num_test": "1", "output_dir": str(tmp_path), "ckpt_dir": str(tmp_path), "handlers": "[]"}
    result = check_properties(PATHOLOGY, INFERENCE, "infer", args, PATHOLOGY / "configs" / "metadata.json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "missing: []" in result.stdout


# --- the pieces ----------------------------------------------------------------------------------------------------

def _predicted_maps(size: int, count: int, noise: float, seed: int) -> dict[str, torch.Tensor]:
    """HoVer-Net-like maps of random, partly touching ellipses, with noise."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    instances, types = np.zeros((size, size), np.int32), np.zeros((size, size), np.int64)
    for index in range(1, count + 1):
        row, column = rng.integers(8, size - 8, 2)
        rows, columns = ellipse(row, column, rng.integers(3, 9), rng.integers(3, 9), shape=instances.shape,
                                rotation=rng.uniform(0, 3))
        instances[rows, columns], types[rows, columns] = index, rng.integers(1, 6)
    nuclei = torch.as_tensor(instances > 0)

    def noisy(maps: torch.Tensor, scale: float) -> torch.Tensor:
        return maps + scale * torch.randn(maps.shape, generator=generator)

    return {"nucleus_prediction": noisy(4.0 * torch.stack([~nuclei, nuclei]).float(), noise),
            "horizontal_vertical": noisy(torch.as_tensor(ComputeHoVerMaps()(instances[None])).float(), noise / 10),
            "type_prediction": noisy(3.0 * torch.nn.functional.one_hot(torch.as_tensor(types), 6)
                                     .permute(2, 0, 1).float(), noise)}


def test_boxed_postprocessing_gives_monai_results_and_accepts_maps_without_nuclei():
    settings = {"sobel_kernel_size": 21, "marker_threshold": 0.4, "marker_radius": 2, "min_object_size": 10}
    monai_post = Compose([HoVerNetInstanceMapPostProcessingd(**settings), HoVerNetNuclearTypePostProcessingd()])
    boxed = Compose([postprocessing.BoxedHoVerNetInstanceMapPostProcessingd(**settings),
                     postprocessing.BoxedHoVerNetNuclearTypePostProcessingd()])
    for noise, seed in ((0.0, 0), (1.0, 1)):
        maps = _predicted_maps(256, 90, noise, seed)
        expected, got = monai_post(dict(maps)), boxed(dict(maps))
        assert torch.equal(expected["instance_map"], got["instance_map"])
        assert torch.equal(expected["type_map"], got["type_map"])
        assert {int(k) for k in expected["instance_info"]} == set(got["instance_info"])
        assert len(got["instance_info"]) > 30
        for inst_id, info in expected["instance_info"].items():
            for field in ("bounding_box", "centroid", "contour", "type", "type_prob"):
                assert np.array_equal(info[field], got["instance_info"][int(inst_id)][field]), (inst_id, field)
    empty = {"nucleus_prediction": torch.stack([torch.ones(64, 64), torch.zeros(64, 64)]),
             "horizontal_vertical": torch.zeros(2, 64, 64), "type_prediction": torch.zeros(6, 64, 64)}
    with pytest.raises(RuntimeError):  # MONAI's: "Not a valid hover map"
        monai_post(dict(empty))
    result = boxed(dict(empty))
    assert result["instance_info"] == {} and result["instance_map"].shape == result["type_map"].shape == (1, 64, 64)


def test_pyramid_reader_decodes_only_the_tiles_of_a_region(pyramid, monkeypatch):
    with tifffile.TiffFile(pyramid) as tif:
        levels = [level.asarray() for level in tif.series[0].levels]
    reader = slides.PyramidTiffWSIReader()
    wsi = reader.read(str(pyramid))
    try:
        assert reader.get_level_count(wsi) == 2  # MONAI's tifffile backend counts pages: 1 for a sub-IFD pyramid
        assert [reader.get_size(wsi, i) for i in (0, 1)] == [(800, 1100), (400, 550)]
        monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("a whole level was decoded"))
        for level, (top, left, height, width) in ((0, (100, 250, 300, 200)), (1, (0, 500, 64, 80)),
                                                  (0, (790, 1090, 30, 30))):
            region = reader.read_level_region(wsi, level, top, left, height, width)
            expected = np.zeros((height, width, 3), np.uint8)
            inside = levels[level][top:top + height, left:left + width]
            expected[:inside.shape[0], :inside.shape[1]] = inside
            assert np.array_equal(region, expected)
        patch, meta = reader.get_data(wsi, location=(200, 500), size=(50, 60), level=1)  # location at level 0
        assert np.array_equal(np.moveaxis(patch, 0, -1), levels[1][100:150, 250:310]) and meta["level"] == 1
    finally:
        wsi.close()
    source = slides.OpenInputd("image", level=1).open(str(pyramid))
    try:
        assert isinstance(source, slides.SlideImage) and (source.height, source.width) == (400, 550)
        assert source.downsample == (2.0, 2.0)
    finally:
        source.close()
    with pytest.raises(UnusableImageError, match=r"slide\.tif: level 2 was requested; the slide has 2 level\(s\)"):
        slides.OpenInputd("image", level=2).open(str(pyramid))


def test_region_cores_tile_the_image_once_and_reads_add_the_margin():
    regions, total = slides.plan_regions(700, 1000, 328, 328)
    assert total == len(regions) == 3 * 4
    covered = np.zeros((700, 1000), int)
    for region in regions:
        top, left, bottom, right = region.core
        covered[top:bottom, left:right] += 1
        assert region.read == (max(0, top - 328), max(0, left - 328), min(700, bottom + 328), min(1000, right + 328))
    assert (covered == 1).all()
    kept, total = slides.plan_regions(700, 1000, 328, 328, keep=lambda core: core[1] < 328)
    assert total == 12 and [r.core[1] for r in kept] == [0, 0, 0]


def test_pixels_are_brought_to_rgb_uint8_or_refused_with_the_file_named():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    assert np.array_equal(slides.rgb_uint8(rgb.astype(np.uint16) * 257, "a.tif"), rgb)
    twelve_bit = rgb.astype(np.uint16) * 16  # 12-bit data in a 16-bit file: rescaled from 4095, not 65535
    assert np.array_equal(slides.rgb_uint8(twelve_bit, "b.tif"), np.round(twelve_bit * 255.0 / 4095))
    assert np.array_equal(slides.rgb_uint8(rgb / 255.0, "c.tif"), rgb)
    transparent = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], axis=-1)
    assert (slides.rgb_uint8(transparent, "d.png") == 255).all()  # alpha 0: white
    for pixels, message in ((rgb[..., 0], "e.png: a grayscale image"), (rgb[..., :2], "e.png: a grayscale image"),
                            (rgb[:8], "e.png: the image is 30x8 pixels"),
                            (-rgb.astype(np.int16), "e.png: a int16 image with negative values")):
        with pytest.raises(UnusableImageError, match=message):
            slides.rgb_uint8(pixels, "e.png")


def test_metadata_validates_against_the_model_zoo_schema(tmp_path):
    import jsonschema

    schema = json.loads(official_schema(tmp_path).read_text())
    metadata = json.loads((PATHOLOGY / "configs" / "metadata.json").read_text())
    jsonschema.validate(metadata, schema)
    exported = json.loads(INFERENCE.read_text())["export_networks"]
    assert exported == {"network_def": "models/hovernet.pt", "generator_def": "models/generator_ihc_to_he.pt"}
    assert {"network_data_format", "generator_data_format"} <= set(metadata)
