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
                    (0.24703233, 0.24348505, 0.26158768), augment=True, cutout=True),
        DatasetSpec("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    augment=True, cutout=True),
        # SVHN gets no augmentation at all, in search or evaluation (upstream `search/preproc.py`,
        # `eval/svhn/train.py`).
        DatasetSpec("svhn", 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                    augment=False, cutout=False),
        # Embedded offline default: needs no files and no network. It takes the CIFAR code paths
        # (crop + flip, Cutout) so that a run on it exercises everything a CIFAR run does.
        DatasetSpec("digits", 10, (DIGITS_MEAN,) * 3, (DIGITS_STD,) * 3, augment=True, cutout=True),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None
