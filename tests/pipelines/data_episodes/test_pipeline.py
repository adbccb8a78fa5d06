from pathlib import Path

import pytest
from PIL import Image
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset

from tint_distill.data import sources
from tint_distill.data.images import ImageReadError
from tint_distill.pipelines.data_episodes import create_pipeline

PARAMS = {
    "params:data_episodes.class_splits": {"base": ["fruit"], "novel": ["fish", "clock", "house"]},
    "params:data_episodes.sampling": {"n_way": 2, "n_shot": 3, "n_query": 2, "n_episodes": 4, "seed": 5},
    "params:data_episodes.image_check": "all",
    "params:data_episodes.min_image_side": 8,
    "params:data_episodes.grids.n_episodes": 2,
    "params:data_episodes.grids.cell_size": 40,
}


def run(folder: Path, **params) -> dict:
    episodes_csv = CSVDataset(filepath=str(folder.parent / "episodes.csv"), save_args={"index": False})
    catalog = DataCatalog({"raw_images": MemoryDataset(sources.image_folder(folder)), "episodes": episodes_csv})
    for name, value in {**PARAMS, **{f"params:data_episodes.{k}": v for k, v in params.items()}}.items():
        catalog[name] = value
    outputs = SequentialRunner().run(create_pipeline(), catalog)  # the free outputs, by name
    loaded = {name: dataset.load() if hasattr(dataset, "load") else dataset for name, dataset in outputs.items()}
    return {**loaded, "episodes": episodes_csv.load()}


def test_pipeline_on_real_drawings(small_folder: Path):
    out = run(small_folder)
    episodes = out["episodes"]
    assert episodes["episode"].nunique() == 4 and len(episodes) == 4 * 2 * 5
    assert out["image_check_report"]["images_checked"] == 32
    grids = out["episode_support_grids"]
    assert sorted(grids) == ["episode_0000", "episode_0001"]
    width, height = grids["episode_0000"].size
    assert width > 3 * 40 and height > 2 * 40  # 3 supports per row, 2 classes


def test_corrupt_image_stops_the_run_naming_the_file(small_folder: Path):
    victim = sorted((small_folder / "fruit").glob("*.png"))[-1]  # a base class: not in any episode
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=victim.name):
        run(small_folder)


def test_tiny_image_stops_the_run_naming_the_file(small_folder: Path):
    tiny = small_folder / "fruit" / "pixel.png"  # a base class: only the full check sees it
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    with pytest.raises(ValueError, match=r"pixel\.png \(1x1 px\)") as error:
        run(small_folder)
    message = str(error.value)
    assert message.startswith("1 image(s)") and "8 px" in message
    assert "data_episodes.min_image_side" in message and str(tiny) in message
    assert run(small_folder, min_image_side=1)["image_check_report"]["images_checked"] == 33
    report = run(small_folder, image_check="none")["image_check_report"]  # nothing decoded, nothing refused
    assert report == {"scope": "none", "images_checked": 0, "min_side": 8}
