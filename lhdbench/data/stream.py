"""A batch stream that lives on the device: the whole split is uploaded once as uint8 and every batch
(indexing, crop, flip, normalization, Cutout) is made there with batched tensor ops.

No DataLoader, no worker processes and no per-step host-to-device copies (the airbench recipe).
One torch.Generator on the stream's device drives every random choice, so a stream is reproducible
from its seed and can be checkpointed with `state_dict()`.

Two ways to draw batches, both from the same uploaded data and generator:

* `epoch()`: one pass over the data in a fresh permutation (weights; evaluation training and test).
* `next_batch()`: an endless stream of full batches that keeps its permutation and position across
  calls and draws a new permutation when it runs out (architecture batches in search). This is
  epoch-wise sampling without replacement; the LHD code calls `next(iter(valid_queue))` every step,
  i.e. i.i.d. batches (chaoji90/LHD `search/DARTS/train_search_darts.py`). See docs/data.md.

How (for speed): a batch is a handful of tiny kernels, so per-batch cost is kernel-launch overhead,
not GPU work. A *pass* is therefore prepared whole when its permutation is drawn: the random choices
of every sample in it (crop offset, flip, Cutout centre) are drawn at once, the images are gathered in
permutation order, cropped and flipped into one uint8 buffer, and the Cutout squares become one
boolean mask. A batch is then a slice of those, normalized with one fused kernel and masked with one
more. The result is exactly what per-batch augmentation would give for the same random choices; only
the moment they are drawn differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .sources import ImageSet
from .specs import DatasetSpec

CROP_PADDING = 4  # RandomCrop(32, padding=4), zero fill (upstream `search/preproc.py`)
CHUNK = 4096  # samples per gather when a pass is prepared: bounds its temporaries (~80 MB)
STATE_VERSION = 1
_PARAMS = ("crop_y", "crop_x", "flip", "cutout_y", "cutout_x")  # per-sample random choices of a pass


@dataclass
class _Pass:
    """One permutation with every sample's random choices drawn and applied (except normalization)."""

    order: torch.Tensor  # (N,) int64: dataset indices in the order they are served
    params: dict[str, torch.Tensor]  # name -> (N,) int64 for the augmentations in use
    images: torch.Tensor  # (N, 3, H, W) uint8, cropped and flipped, in `order`
    labels: torch.Tensor  # (N,) int64, in `order`
    erase: torch.Tensor | None  # (N, 1, H, W) bool Cutout squares, or None without Cutout


class GpuBatchStream:
    """Batches of (x float32 (B, 3, H, W) normalized, y int64 (B,)) made on `device`.

    `augment` turns on random crop (zero padding 4) + horizontal flip and `cutout` (side length, 0 = off)
    turns on Cutout; each only where the dataset's spec allows it (SVHN: never). The effective settings
    are the attributes `augment` and `cutout`. Returned labels may be views of an internal buffer: do
    not modify them in place.
    """

    def __init__(self, data: ImageSet, spec: DatasetSpec, batch_size: int, *,
                 device: torch.device | str = "cpu", augment: bool = False, cutout: int = 0,
                 shuffle: bool = True, seed: int = 0, channels_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cutout < 0:
            raise ValueError(f"cutout must be >= 0 (0 = off), got {cutout}")
        if len(data) == 0:
            raise ValueError("cannot stream an empty ImageSet")
        self.device = torch.device(device)
        self.spec = spec
        self.batch_size = int(batch_size)
        self.augment = bool(augment and spec.augment)
        self.cutout = int(cutout) if spec.cutout else 0
        self.shuffle = bool(shuffle)
        self.channels_last = bool(channels_last)
        self.num_samples = len(data)
        self._format = torch.channels_last if self.channels_last else torch.contiguous_format

        # The one upload: uint8 images (4x smaller than float) and labels.
        self.images = data.images.to(self.device).contiguous()
        self.labels = data.labels.to(self.device)
        _, _, self._h, self._w = self.images.shape

        # (u / 255 - mean) / std == shift + u * scale, one addcmul per batch
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(seed))
        self._stream: _Pass | None = None  # the endless stream's current pass
        self._pos = 0  # ... and how much of it next_batch() has served

    def __len__(self) -> int:
        """Batches per epoch(): ceil(N / batch_size)."""
        return math.ceil(self.num_samples / self.batch_size)

    # ---------------------------------------------------------------------------------------- drawing

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over every item, in a fresh permutation (dataset order if shuffle=False).

        The pass (permutation and all its augmentation choices) is drawn when epoch() is called.
        The last batch is short when batch_size does not divide N.
        """
        p = self._new_pass()

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for lo in range(0, self.num_samples, self.batch_size):
                hi = min(lo + self.batch_size, self.num_samples)
                x = self._empty(hi - lo)
                self._fill(x, p, lo, hi)
                yield x, p.labels[lo:hi]

        return batches()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next full batch of the endless stream; wraps into a new pass when one runs out."""
        x = self._empty(self.batch_size)
        ys, done = [], 0
        while done < self.batch_size:
            if self._stream is None or self._pos == self.num_samples:
                self._stream, self._pos = self._new_pass(), 0
            take = min(self.batch_size - done, self.num_samples - self._pos)
            self._fill(x[done:done + take], self._stream, self._pos, self._pos + take)
            ys.append(self._stream.labels[self._pos:self._pos + take])
            self._pos += take
            done += take
        return x, ys[0] if len(ys) == 1 else torch.cat(ys)

    # ------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """What it takes to continue identically: the generator state and the endless stream's pass
        (its permutation and per-sample augmentation choices) and position.

        Only tensors and ints (torch.load(weights_only=True) reads it). An epoch() iterator that is
        part-way through is not captured: take the state between epochs.
        """
        state: dict = {
            "version": STATE_VERSION,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "generator": self._generator.get_state().clone(),
            "pos": self._pos,
        }
        empty = torch.empty(0, dtype=torch.int64)
        p = self._stream
        state["perm"] = empty if p is None else p.order.to("cpu", copy=True)
        for name in _PARAMS:
            used = p is not None and name in p.params
            state[name] = p.params[name].to("cpu", copy=True) if used else empty
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported GpuBatchStream state version {state.get('version')!r}")
        for key, mine in (("num_samples", self.num_samples), ("batch_size", self.batch_size)):
            if int(state[key]) != mine:
                raise ValueError(f"state is for {key}={int(state[key])}, this stream has {key}={mine}")
        perm, pos = state["perm"], int(state["pos"])
        used = self._param_names()
        params = {name: state[name] for name in used}
        if (perm.numel() not in (0, self.num_samples) or not 0 <= pos <= self.num_samples
                or any(state[name].numel() != (perm.numel() if name in used else 0) for name in _PARAMS)):
            raise ValueError("inconsistent GpuBatchStream state (pass length, position or augmentation "
                             "choices that do not match this stream's augment/cutout settings)")
        generator = torch.Generator(device=self.device)
        try:
            generator.set_state(state["generator"].to("cpu", torch.uint8))
        except RuntimeError as error:
            raise ValueError(f"generator state does not fit this stream's {self.device.type} generator "
                             f"(saved on another device type?): {error}") from error
        self._generator = generator
        if perm.numel() == 0:
            self._stream = None
        else:
            to_dev = {k: v.to(self.device, torch.int64, copy=True) for k, v in params.items()}
            self._stream = self._prepare(perm.to(self.device, torch.int64, copy=True), to_dev)
        self._pos = pos

    # -------------------------------------------------------------------------------------- internals

    def _param_names(self) -> list[str]:
        return ([*_PARAMS[:3]] if self.augment else []) + ([*_PARAMS[3:]] if self.cutout else [])

    def _new_pass(self) -> _Pass:
        n, g, dev = self.num_samples, self._generator, self.device
        if self.shuffle:
            order = torch.randperm(n, generator=g, device=dev)
        else:
            order = torch.arange(n, device=dev)
        highs = {"crop_y": 2 * CROP_PADDING + 1, "crop_x": 2 * CROP_PADDING + 1, "flip": 2,
                 "cutout_y": self._h, "cutout_x": self._w}
        params = {name: torch.randint(0, highs[name], (n,), generator=g, device=dev)
                  for name in self._param_names()}
        return self._prepare(order, params)

    def _prepare(self, order: torch.Tensor, params: dict[str, torch.Tensor]) -> _Pass:
        """Apply a pass's permutation, crop/flip and Cutout choices. Deterministic: no randomness here."""
        labels = self.labels[order]
        if self.augment:
            images = torch.empty((self.num_samples, 3, self._h, self._w), dtype=torch.uint8,
                                 device=self.device, memory_format=self._format)
            for lo in range(0, self.num_samples, CHUNK):
                hi = min(lo + CHUNK, self.num_samples)
                images[lo:hi] = self._crop_flip(order[lo:hi], params["crop_y"][lo:hi],
                                                params["crop_x"][lo:hi], params["flip"][lo:hi])
        elif self.shuffle:
            images = self.images[order].contiguous(memory_format=self._format)
        else:  # dataset order, untouched: serve the uploaded images themselves
            images = self.images.contiguous(memory_format=self._format)
        erase = self._cutout_mask(params["cutout_y"], params["cutout_x"]) if self.cutout else None
        return _Pass(order, params, images, labels, erase)

    def _crop_flip(self, idx: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                   flip: torch.Tensor) -> torch.Tensor:
        """Per sample: a random crop of the zero-padded image (top-left corner (dy, dx) in padded
        coordinates, i.e. a shift of dy - 4, dx - 4), then a horizontal flip where flip == 1, as one
        gather: out[b, :, i, j] = padded[b, :, dy_b + i, dx_b + (W-1-j if flip_b else j)].

        The gather runs on channels-last pixels, so its index has one entry per pixel, not per value
        (3x less index memory); the result is an NCHW view with channels-last strides."""
        p, dev, b = CROP_PADDING, self.device, len(idx)
        hp, wp = self._h + 2 * p, self._w + 2 * p
        nhwc = self.images[idx].permute(0, 2, 3, 1)
        padded = torch.nn.functional.pad(nhwc, (0, 0, p, p, p, p))  # zeros, (B, H+2p, W+2p, C) contiguous
        rows = dy[:, None] + torch.arange(self._h, device=dev)  # (B, H)
        cols = torch.arange(self._w, device=dev)
        cols = dx[:, None] + torch.where(flip[:, None].bool(), cols.flip(0), cols)  # (B, W)
        base = torch.arange(b, device=dev)[:, None, None] * hp
        pixel = (base + rows[:, :, None]) * wp + cols[:, None, :]  # (B, H, W) flat pixel index
        return padded.view(b * hp * wp, -1)[pixel].permute(0, 3, 1, 2)

    def _cutout_mask(self, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
        """Cutout (DeVries & Taylor; DARTS' `utils.Cutout`): per sample, a square of side `cutout` whose
        centre is uniform over the pixels, clipped at the borders; True where the image is set to 0
        (after normalization, as in DARTS, where Cutout follows Normalize).

        The square spans [c - L//2, c - L//2 + L); for even L (16 in the paper) this is DARTS'
        [c - L//2, c + L//2), for odd L it is L wide where DARTS' would be L - 1.
        """
        n = self.cutout
        rows = torch.arange(self._h, device=self.device) - (cy[:, None] - n // 2)  # (N, H) offsets
        cols = torch.arange(self._w, device=self.device) - (cx[:, None] - n // 2)
        inside_rows = (rows >= 0) & (rows < n)
        inside_cols = (cols >= 0) & (cols < n)
        return inside_rows[:, None, :, None] & inside_cols[:, None, None, :]  # (N, 1, H, W)

    def _empty(self, b: int) -> torch.Tensor:
        return torch.empty((b, 3, self._h, self._w), dtype=torch.float32, device=self.device,
                           memory_format=self._format)

    def _fill(self, out: torch.Tensor, p: _Pass, lo: int, hi: int) -> None:
        """out = normalize(p.images[lo:hi]) with Cutout applied: two kernels."""
        torch.addcmul(self._shift, p.images[lo:hi], self._scale, out=out)
        if p.erase is not None:
            out.masked_fill_(p.erase[lo:hi], 0.0)
