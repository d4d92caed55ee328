"""Re-ID data: the synthetic `shapes-reid` sets and the Market-1501 / DukeMTMC-reID folder layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bob.data import dataset_info, load_split
from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.reid.data import num_queries, pad_to_square, reid_arrays
from bob.tasks.reid.shapes import ReidShapesConfig, generate_reid_shapes, reid_shapes_seed

MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s3_000101_02.jpg"],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c2s1_000301_00.jpg"],
    "bounding_box_test": [
        "0001_c2s1_000301_01.jpg",
        "0001_c1s1_001051_01.jpg",
        "0003_c6s2_000151_02.jpg",
        "0000_c4s1_000100_01.jpg",
        "-1_c1s1_000401_03.jpg",
        "-1_c3s1_000401_03.jpg",
    ],
}
DUKE = {
    "bounding_box_train": ["0005_c2_f0046182.jpg", "0005_c5_f0046999.jpg"],
    "query": ["0011_c7_f0000001.jpg"],
    "bounding_box_test": ["0011_c8_f0000002.jpg", "0011_c7_f0000003.jpg", "0042_c1_f0000004.jpg"],
}


def make_reid_folder(folder: Path, files: dict[str, list[str]]) -> Path:
    """Tiny 16×8 jpgs under `folder`, one colour per person."""
    for sub, names in files.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            pid = abs(int(name.split("_")[0]))
            Image.new("RGB", (8, 16), (pid * 30 % 256, 80, 160)).save(folder / sub / name)
    (folder / "query" / "Thumbs.db").write_bytes(b"not an image")  # shipped in Market's folders
    return folder


def make_market(root: Path, nested: bool = False) -> Path:
    return make_reid_folder(root / ("market1501/Market-1501-v15.09.15" if nested else "market1501"), MARKET)


def make_duke(root: Path) -> Path:
    return make_reid_folder(root / "dukemtmc-reid", DUKE)


def test_synthetic_splits_follow_market():
    cfg = ReidShapesConfig(train_ids=4, test_ids=3, cameras=3, per_camera=2, distractors=5, size=32)
    arrays = generate_reid_shapes(cfg, seed=1)
    train, query, gallery = arrays["train"], arrays["query"], arrays["gallery"]
    assert len(train[0]) == 4 * 3 * 2 and len(query[0]) == 3 * 3 and len(gallery[0]) == 3 * 3 + 5
    assert set(train[1]) == {1, 2, 3, 4} and set(query[1]) == {5, 6, 7}
    assert set(gallery[1]) == {0, 5, 6, 7} and np.count_nonzero(gallery[1] == 0) == 5
    # one query per test identity and camera
    assert sorted(zip(query[1].tolist(), query[2].tolist(), strict=True)) == [
        (p, c) for p in (5, 6, 7) for c in range(3)
    ]
    assert train[0].shape[1:] == (32, 32, 3) and train[0].dtype == np.uint8
    again = generate_reid_shapes(cfg, seed=1)
    assert all(np.array_equal(a, b) for s in arrays for a, b in zip(arrays[s], again[s], strict=True))
    assert not np.array_equal(generate_reid_shapes(cfg, seed=2)["query"][0], query[0])


def test_registered_synthetic_sets_are_fingerprinted_reid_splits():
    info = dataset_info("shapes-reid-mini")
    assert info.task_type == "reid" and info.splits == ("train", "test")
    test = load_split("shapes-reid-mini", "test")
    n_query = num_queries(test)
    pids, camids = reid_arrays(test)
    assert n_query == 12 * 3 and len(test) == n_query + 12 * 3 + 8
    assert set(camids[:n_query]) == {0, 1, 2} and pids[:n_query].min() == 13
    assert test.fingerprint == load_split("shapes-reid-mini", "test").fingerprint
    assert test.fingerprint != load_split("shapes-reid-mini", "train").fingerprint
    assert test.image(0).size == (64, 64)
    with pytest.raises(UsageError, match="does not say which images are queries"):
        num_queries(load_split("shapes-reid-mini", "train"))


@pytest.mark.parametrize("nested", [False, True])
def test_market_layout_drops_junk_and_keeps_distractors(tmp_path, nested):
    make_market(tmp_path, nested)
    test = load_split("market1501", "test", root=tmp_path)  # Thumbs.db is not a jpg: ignored
    assert num_queries(test) == 2 and test.junk_dropped == 2
    # queries, then the gallery sorted by file name: -1 gone, 0000 kept; cameras 0-based
    assert test.labels.tolist() == [1, 3, 0, 1, 1, 3]
    assert test.camids.tolist() == [0, 1, 3, 0, 1, 5]
    assert test.image(0).size == (16, 16)  # 8×16 padded to a square


def test_duke_layout(tmp_path):
    make_duke(tmp_path)
    train = load_split("dukemtmc-reid", "train", root=tmp_path)
    assert train.labels.tolist() == [5, 5] and train.camids.tolist() == [1, 4]
    assert load_split("dukemtmc-reid", "test", root=tmp_path).camids.tolist() == [6, 6, 7, 0]


def test_pad_to_square_centres_the_image():
    img = pad_to_square(Image.new("RGB", (4, 8), (255, 255, 255)))
    array = np.asarray(img)
    assert img.size == (8, 8) and array[:, :2].max() == 0 and array[:, 2:6].min() == 255


def test_missing_dataset_names_where_bob_looked_and_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="bounding_box_train/, query/, bounding_box_test/") as err:
        load_split("market1501", "test", root=tmp_path)
    assert str(tmp_path / "market1501") in str(err.value)


def test_missing_split_folder_is_named(tmp_path):
    folder = make_market(tmp_path)
    (folder / "query" / "Thumbs.db").unlink()
    for f in (folder / "query").iterdir():
        f.unlink()
    (folder / "query").rmdir()
    with pytest.raises(DatasetNotFoundError, match=r"lacks query/"):
        load_split("market1501", "train", root=tmp_path)


@pytest.mark.parametrize(
    ("name", "message"),
    [("0001_c1_f0001.jpg", "cannot read person and camera"), ("0001_c9s1_000001_00.jpg", "camera 9")],
)
def test_bad_file_names_are_named(tmp_path, name, message):
    folder = make_market(tmp_path)
    Image.new("RGB", (8, 16)).save(folder / "query" / name)
    with pytest.raises(UsageError, match=message) as err:
        load_split("market1501", "test", root=tmp_path)
    assert name in str(err.value)


def test_empty_query_folder_is_an_error(tmp_path):
    folder = make_market(tmp_path)
    for f in (folder / "query").glob("*.jpg"):
        f.unlink()
    with pytest.raises(UsageError, match="holds no usable image"):
        load_split("market1501", "test", root=tmp_path)


def test_download_is_refused(tmp_path):
    with pytest.raises(UsageError, match="does not download"):
        load_split("dukemtmc-reid", "test", root=tmp_path, download=True)


def test_second_synthetic_domain_has_other_identities_and_cameras():
    a = ReidShapesConfig(train_ids=2, test_ids=2, cameras=2, per_camera=2, distractors=0, size=32)
    b = ReidShapesConfig(**{**a.__dict__, "first_camera": 2, "domain": "b"})
    arrays_a = generate_reid_shapes(a, reid_shapes_seed("a"))
    arrays_b = generate_reid_shapes(b, reid_shapes_seed("b"))
    assert reid_shapes_seed("a") != reid_shapes_seed("b")
    assert not np.array_equal(arrays_a["train"][0], arrays_b["train"][0])
    assert dataset_info("shapes-reid-b").task_type == "reid"
    with pytest.raises(UsageError, match="does not fit"):
        generate_reid_shapes(ReidShapesConfig(cameras=4, first_camera=3), 0)
