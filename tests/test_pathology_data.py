"""The pathology bundle's data side: the BCI (IHC -> H&E) and PanNuke layouts and their demo sets."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from helpers.bundle_scripts import bundle_module
from shared.data import slides
from shared.data.errors import InvalidInputError

PATHOLOGY = REPO / "bundles" / "pathology_ihc_to_he_hovernet"
demo = bundle_module(PATHOLOGY, "demo")
layout = bundle_module(PATHOLOGY, "layout")

BCI = {"image_size": 128, "num_train": 5, "num_test": 2}
PANNUKE = {"num_folds": 3, "tiles_per_fold": 2}


def _bci_names(split: str, count: int) -> list[str]:
    return [f"{i:05d}_{split}_{layout.HER2_LEVELS[i % 4]}.png" for i in range(count)]


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


@pytest.fixture(scope="module")
def bci_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bci") / "demo"
    demo.ensure_bci_demo(str(root), **BCI)
    return root


@pytest.fixture(scope="module")
def pannuke_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pannuke") / "demo"
    demo.ensure_pannuke_demo(str(root), **PANNUKE)
    return root


# --- BCI --------------------------------------------------------------------------------------------------------------

def test_bci_demo_has_the_bci_layout_and_names(bci_root):
    for side in ("HE", "IHC"):
        for split, count in (("train", BCI["num_train"]), ("test", BCI["num_test"])):
            folder = bci_root / side / split
            assert sorted(p.name for p in folder.iterdir()) == _bci_names(split, count)
            for path in folder.iterdir():
                image = _rgb(path)
                assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert sorted(p.name for p in bci_root.iterdir()) == ["HE", "IHC", "demo_manifest.json"]


def test_bci_pairs_are_aligned_and_the_he_side_looks_like_he(bci_root):
    for pair in layout.bci_pairs(str(bci_root), "train"):
        ihc, he = _rgb(pair["A"]), _rgb(pair["B"])
        # the same tissue: the H&E's haematoxylin (by rgb2hed) follows the IHC's pixel by pixel
        assert np.corrcoef(demo.haematoxylin(ihc).ravel(), demo.haematoxylin(he).ravel())[0, 1] > 0.9
        # stroma (tissue with little haematoxylin or DAB): pink on the H&E, redder than on the IHC
        stroma = (demo.dab(ihc) < 0.3) & (demo.haematoxylin(ihc) < 0.3) & (ihc.astype(int).sum(-1) < 690)
        assert stroma.mean() > 0.02
        ihc_colour, he_colour = ihc[stroma].mean(0), he[stroma].mean(0)
        assert he_colour[0] > he_colour[2] + 10 and he_colour[0] > he_colour[1] + 20
        assert he_colour[0] - he_colour[2] > ihc_colour[0] - ihc_colour[2] + 10
        # nuclei are darker than the rest of the tissue on the H&E
        nuclei = demo.nuclei_instances(ihc) > 0
        assert he[nuclei].mean() < he[~nuclei].mean() - 15


def test_restaining_scales_the_dab_and_keeps_the_image_at_unit_gains():
    tissue = demo.source_ihc()[:128, :128]
    assert np.abs(demo.restain_ihc(tissue).astype(int) - tissue).max() <= 1
    weak = demo.restain_ihc(tissue, dab_gain=demo.DAB_GAIN["0"])
    assert demo.dab(weak).mean() < 0.2 * demo.dab(tissue).mean()
    assert np.corrcoef(demo.haematoxylin(weak).ravel(), demo.haematoxylin(tissue).ravel())[0, 1] > 0.9


def test_bci_demo_is_deterministic(bci_root, tmp_path):
    again = tmp_path / "again"
    demo.ensure_bci_demo(str(again), **BCI)
    assert _files(again) == _files(bci_root)


def test_bci_pairs_pair_by_file_name(bci_root):
    pairs = layout.bci_pairs(str(bci_root), "test")
    assert [p["case"] for p in pairs] == [n.removesuffix(".png") for n in _bci_names("test", BCI["num_test"])]
    for pair in pairs:
        assert pair["A"] == str(bci_root / "IHC" / "test" / f"{pair['case']}.png")
        assert pair["B"] == str(bci_root / "HE" / "test" / f"{pair['case']}.png")
        assert pair["her2"] == pair["case"].rsplit("_", 1)[1]
    assert [p["her2"] for p in pairs] == ["0", "1+"]


def test_bci_pairs_name_what_is_missing(bci_root, tmp_path):
    root = tmp_path / "bci"
    shutil.copytree(bci_root, root)
    (root / "HE" / "train" / "00002_train_2+.png").unlink()
    with pytest.raises(InvalidInputError, match=r"no partner.*IHC/train/00002_train_2\+\.png"):
        layout.bci_pairs(str(root), "train")
    for path in (root / "HE" / "test").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"no images \(\*\.png\) in .*HE/test"):
        layout.bci_pairs(str(root), "test")
    shutil.rmtree(root / "IHC" / "test")
    with pytest.raises(FileNotFoundError, match=r"IHC/test does not exist"):
        layout.bci_pairs(str(root), "test")
    with pytest.raises(ValueError, match="split must be one of"):
        layout.bci_pairs(str(root), "validation")


def test_bci_datalist_splits_train_and_keeps_test(bci_root, tmp_path):
    datalist_file = tmp_path / "datalist.json"
    split = layout.build_bci_datalist(str(bci_root), str(datalist_file), val_fraction=0.2, seed=0)
    train_cases = {p["case"] for p in layout.bci_pairs(str(bci_root), "train")}
    training, validation = ({p["case"] for p in split[k]} for k in ("training", "validation"))
    assert training | validation == train_cases and not training & validation and len(validation) == 1
    assert [p["case"] for p in split["test"]] == [p["case"] for p in layout.bci_pairs(str(bci_root), "test")]
    written = json.loads(datalist_file.read_text())
    assert {k: written[k] for k in split} == split and written["excluded"] == []
    again = layout.build_bci_datalist(str(bci_root), str(tmp_path / "again.json"), val_fraction=0.2, seed=0)
    assert again == split


# --- PanNuke ----------------------------------------------------------------------------------------------------------

def _fold_arrays(root, fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.load(root / f"Fold {fold}" / "images" / f"fold{fold}" / "images.npy"),
            np.load(root / f"Fold {fold}" / "images" / f"fold{fold}" / "types.npy"),
            np.load(root / f"Fold {fold}" / "masks" / f"fold{fold}" / "masks.npy"))


def test_pannuke_demo_has_the_pannuke_files(pannuke_root):
    for fold in range(1, PANNUKE["num_folds"] + 1):
        images, types, masks = _fold_arrays(pannuke_root, fold)
        assert images.shape == (2, 256, 256, 3) and images.dtype == np.float64
        assert 0 <= images.min() and images.max() <= 255 and np.all(images == np.round(images))
        assert types.shape == (2,) and types.dtype.kind == "U" and list(types) == ["Colon", "Colon"]
        assert masks.shape == (2, 256, 256, 6) and masks.dtype == np.float64
        nuclei = masks[..., :5] > 0
        assert np.array_equal(masks[..., 5], (~nuclei.any(-1)).astype(float))  # channel 5: background
        assert nuclei.sum(-1).max() == 1  # a pixel belongs to one type
        for tile in masks:
            ids = [set(np.unique(tile[..., c])) - {0} for c in range(5)]
            assert sum(len(i) for i in ids) == len(set().union(*ids))  # ids unique across the channels


def test_pannuke_items_give_consistent_instances_and_types(pannuke_root):
    items = layout.pannuke_items(str(pannuke_root), [1, 2, 3])
    assert [i["case"] for i in items] == [f"fold{k}_{i:04d}" for k in (1, 2, 3) for i in range(2)]
    type_counts = np.zeros(6, int)
    for item in items:
        image, inst, kind = item["image"], item["label_inst"], item["label_type"]
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert inst.shape == kind.shape == (256, 256) and inst.dtype == kind.dtype == np.int32
        assert item["tissue"] == "Colon"
        assert np.array_equal(inst > 0, kind > 0) and kind.max() <= 5
        ids = np.unique(inst[inst > 0])
        assert np.array_equal(ids, np.arange(1, len(ids) + 1))
        assert 10 <= len(ids) <= 300
        for nucleus in ids:  # every instance has exactly one type
            assert len(np.unique(kind[inst == nucleus])) == 1
        type_counts += np.bincount(kind[inst > 0], minlength=6)
        # the labels follow the nuclei: haematoxylin-dark pixels
        assert image[inst > 0].mean() < image[inst == 0].mean() - 15
    assert (type_counts[[1, 2, 3, 5]] > 0).all()  # Neoplastic, Inflammatory, Connective, Epithelial all present


def test_pannuke_demo_is_deterministic(pannuke_root, tmp_path):
    demo._source_nuclei.cache_clear()  # segment the source again too
    again = tmp_path / "again"
    demo.ensure_pannuke_demo(str(again), **PANNUKE)
    assert _files(again) == _files(pannuke_root)


def test_pannuke_datalist_by_fold(pannuke_root):
    split = layout.pannuke_datalist(str(pannuke_root))
    assert {k: sorted({i["case"][:5] for i in v}) for k, v in split.items()} == {
        "training": ["fold1"], "validation": ["fold2"], "test": ["fold3"]}
    assert len(layout.pannuke_datalist(str(pannuke_root), (1, 2), (), (3,), max_tiles_per_fold=1)["training"]) == 2
    with pytest.raises(ValueError, match="fold is in two splits"):
        layout.pannuke_datalist(str(pannuke_root), (1, 2), (2,), (3,))


def test_pannuke_items_name_a_missing_or_misshapen_file(pannuke_root, tmp_path):
    root = tmp_path / "pannuke"
    shutil.copytree(pannuke_root, root)
    masks = root / "Fold 2" / "masks" / "fold2" / "masks.npy"
    np.save(masks, np.zeros((2, 256, 256, 5)))
    with pytest.raises(InvalidInputError, match=r"fold2/masks\.npy has shape \(2, 256, 256, 5\)"):
        layout.pannuke_items(str(root), [2])
    types = root / "Fold 3" / "images" / "fold3" / "types.npy"
    np.save(types, np.array(["Colon"]))
    with pytest.raises(InvalidInputError, match=r"fold3/types\.npy has shape \(1,\)"):
        layout.pannuke_items(str(root), [3])
    (root / "Fold 1" / "images" / "fold1" / "images.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"Fold 1/images/fold1/images\.npy does not exist"):
        layout.pannuke_items(str(root), [1])


def test_pannuke_tile_labels_make_ids_unique_across_channels():
    masks = np.zeros((8, 8, 6))
    masks[0:2, 0:2, 0] = 7  # the real files may reuse an id in two channels
    masks[4:6, 4:6, 2] = 7
    masks[6:8, 0:2, 4] = 3
    masks[0:1, 0:2, 1] = 9  # overlaps the first nucleus: the later channel wins
    inst, kind = layout.pannuke_tile_labels(masks)
    assert sorted(np.unique(inst)) == [0, 1, 2, 3, 4]
    assert kind[0, 0] == 2 and kind[1, 0] == 1 and kind[4, 4] == 3 and kind[6, 0] == 5
    assert inst[0, 0] != inst[1, 0] and inst[4, 4] != inst[1, 0]


def _saturation_mask_before(rgb: np.ndarray, max_threshold: float = 0.08, dilation: int = 2) -> np.ndarray:
    """The tissue mask as the bundle computed it before MONAI's ForegroundMask did (the oracle of the test below)."""
    from skimage import color, filters, morphology

    saturation = color.rgb2hsv(rgb)[..., 1]
    threshold = max_threshold
    if np.ptp(saturation) > 1e-6:
        threshold = min(float(filters.threshold_otsu(saturation)), max_threshold)
    return morphology.dilation(saturation > threshold, morphology.disk(dilation))


def test_tissue_mask_from_monai_foreground_mask_is_the_saturation_mask_it_replaced():
    rng = np.random.default_rng(0)
    tissue = demo.render_he(demo.source_ihc()[:200, :300])  # stained tissue
    glass = np.full((200, 300, 3), 235, np.uint8) + rng.integers(0, 8, (200, 300, 3), dtype=np.uint8)
    half = np.concatenate([glass[:, :150], tissue[:, 150:]], axis=1)
    for picture in (tissue, glass, half, np.full((50, 60, 3), 128, np.uint8)):
        ours = slides.tissue_mask(picture)
        assert ours.dtype == bool and ours.shape == picture.shape[:2]
        assert np.array_equal(ours, _saturation_mask_before(picture))
    assert slides.tissue_mask(half)[:, 160:].all() and slides.tissue_mask(tissue).mean() > 0.9


def test_monai_wsi_splitter_reads_every_window_before_filtering_which_the_region_plan_avoids(tmp_path):
    """What ``slides.plan_regions`` does that ``WSISlidingWindowSplitter`` cannot: choose regions before reading."""
    import tifffile
    from monai.inferers.splitter import WSISlidingWindowSplitter

    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 235, np.uint8), tile=(128, 128), photometric="rgb")
    reads = []
    reader = slides.PyramidTiffWSIReader(level=0)
    original = reader.get_data

    def counting_get_data(*args, **kwargs):
        reads.append(kwargs.get("location"))
        return original(*args, **kwargs)

    reader.get_data = counting_get_data
    splitter = WSISlidingWindowSplitter(patch_size=128, filter_fn=lambda patch, location: False, reader=reader)
    assert list(splitter(str(path))) == [] and len(reads) == 16  # all glass, every window read and decoded
    regions, total = slides.plan_regions(512, 512, 128, 32, keep=lambda core: False)
    assert (regions, total) == ([], 16)  # nothing to read
