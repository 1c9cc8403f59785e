"""A folder of images as a pool: one row per file, in sorted order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class ImageFolder(Dataset):
    """The images of a folder as a pool of unlabelled rows.

    Row ``i`` is the ``i``-th file matching ``pattern`` in sorted order
    (sorted by path, so the order is the same each time the folder is
    read). An item is the image as a float tensor of shape ``(channels,
    height, width)`` with values in [0, 1], or what ``transform`` makes of
    the PIL image. The pool has no labels: items are ``x``, not ``(x, y)``.

    Parameters
    ----------
    root : path-like
        The folder.
    pattern : str, optional
        A glob pattern, relative to ``root``: ``"*.png"`` (the default), or
        ``"**/*.jpg"`` for JPEG files in subfolders too.
    mode : {"L", "RGB"}, default="L"
        PIL mode the images are converted to (grey levels or colour).
    transform : callable, default=None
        Applied to the PIL image instead of the default conversion.
    preload : bool, default=False
        Read every image once at construction and keep the tensors in
        memory (faster queries for small images).

    Attributes
    ----------
    files : list of pathlib.Path
        The image files, in row order.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skal.label_studio import ImageFolder
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(f"{folder}/{i}.png")
    >>> pool = ImageFolder(folder)
    >>> len(pool), tuple(pool[2].shape), round(float(pool[2].max()), 3)
    (3, (1, 8, 8), 0.314)
    """

    def __init__(
        self, root, pattern="*.png", *, mode="L", transform=None, preload=False
    ):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"root must be an existing folder, got {str(root)!r}")
        if mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
        self.pattern = pattern
        self.mode = mode
        self.transform = transform
        self.files = sorted(p for p in self.root.glob(pattern) if p.is_file())
        if not self.files:
            raise ValueError(
                f"no file in {str(self.root)!r} matches pattern {pattern!r}"
            )
        self._cache = None
        if preload:
            self._cache = [self._load(i) for i in range(len(self.files))]

    def __len__(self):
        return len(self.files)

    def _load(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as image:
            image = image.convert(self.mode)
            if self.transform is not None:
                return self.transform(image)
            array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[None]
        else:
            array = np.ascontiguousarray(array.transpose(2, 0, 1))
        return torch.from_numpy(array)

    def __getitem__(self, i):
        if self._cache is not None:
            return self._cache[i]
        return self._load(int(i))
