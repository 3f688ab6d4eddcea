"""What lhdbench needs to know about each dataset.

Statistics and augmentation as in the LHD code (chaoji90/LHD `search/preproc.py`, `eval/<dataset>/train.py`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: bool  # random crop (pad 4) + horizontal flip on training batches
    cutout: bool  # Cutout 16 in evaluation training
    image_size: int = 32  # height and width of the images
    embedded: bool = False  # built in memory (sources.py): no files, no network
    # Images in the training and test splits: what the cost and memory estimates count (0: unknown).
    train_images: int = 0
    test_images: int = 0


# scikit-learn's digits (see sources.py), its 1,437 training images at 3x32x32 in [0, 1]. The three
# channels are copies of one grey channel, so their statistics are equal. Computed once with
#   x = load_images("digits", train=True).images.double() / 255; x.mean(), x.std(unbiased=False)
# (nearest upsampling repeats every pixel 16 times, so the 8x8 statistics are the same);
# tests/test_data_sources.py recomputes them.
DIGITS_MEAN = 0.30543467
DIGITS_STD = 0.37534217

DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in (
        DatasetSpec("cifar10", 10, (0.49139968, 0.48215827, 0.44653124),
                    (0.24703233, 0.24348505, 0.26158768), augment=True, cutout=True,
                    train_images=50_000, test_images=10_000),
        DatasetSpec("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    augment=True, cutout=True, train_images=50_000, test_images=10_000),
        # SVHN gets no augmentation at all, in search or evaluation (upstream `search/preproc.py`,
        # `eval/svhn/train.py`).
        DatasetSpec("svhn", 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                    augment=False, cutout=False, train_images=73_257, test_images=26_032),
        # Embedded offline default: needs no files and no network. It takes the CIFAR code paths
        # (crop + flip, Cutout) so that a run on it exercises everything a CIFAR run does.
        DatasetSpec("digits", 10, (DIGITS_MEAN,) * 3, (DIGITS_STD,) * 3, augment=True, cutout=True,
                    embedded=True, train_images=1_437, test_images=360),
        # The same images at 16x16, for the demo: a network on them costs a quarter of one on 32x32, so
        # a whole benchmark trains to real accuracies in minutes on a small CPU. Nearest upsampling
        # keeps the statistics. No augmentation: a horizontal flip makes other digits, and a 4-pixel
        # crop or a Cutout square is a quarter of a 16-pixel image. The auxiliary head needs 8x8 maps
        # after the second reduction, which 16x16 inputs do not give: protocols on it set
        # evaluate.auxiliary_weight 0.
        DatasetSpec("digits16", 10, (DIGITS_MEAN,) * 3, (DIGITS_STD,) * 3, augment=False, cutout=False,
                    image_size=16, embedded=True, train_images=1_437, test_images=360),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def train_images(name: str) -> int:
    """Images in a dataset's training split; 0 for a dataset lhdbench does not know."""
    return DATASETS[name].train_images if name in DATASETS else 0


def test_images(name: str) -> int:
    """Images in a dataset's test split; 0 for a dataset lhdbench does not know."""
    return DATASETS[name].test_images if name in DATASETS else 0
