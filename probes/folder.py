"""A folder of image files (and mask images) as a probe file: what ``densevis import`` does.
Not imported by ``import probes`` (skimage.io's import would slow every command line's start):
``from probes.folder import import_folder``.

Layout (names are case-sensitive; image files end in one of :data:`IMAGE_SUFFIXES`, any case;
hidden files and other files are skipped):

- labels by folder (``ImageFolder`` style): ``FOLDER/0/*.png`` negatives, ``FOLDER/1/*.png``
  positives; or labels by table: the images in ``FOLDER`` itself and a CSV file with the columns
  ``name`` (the file name in ``FOLDER``) and ``label`` (0 or 1), every image listed;
- masks (optional): ``MASKS/<region>/<image stem>.png`` (any image suffix), one folder per region
  (``MASKS/lesion/cat1.png`` is the lesion of image ``cat1.jpg``); a pixel is inside the region
  where any colour channel of the mask is non-zero (alpha is ignored); an image without a mask
  file of a region has an empty mask there (a negative without a lesion).

Images are read with ``skimage.io`` and made grey by :func:`probes.to_grey` (BT.709 luma of
colour, alpha dropped; 16-bit scaled to 8). All must be square and of one size; ``size``
resizes every image (bilinear, anti-aliased when shrinking, rounded to the nearest level) and
mask (nearest neighbour) to ``size`` x ``size``. Images are taken in sorted order of their path
relative to ``FOLDER`` (so negatives first by folder), which is their index in the file; the
dataset ``names`` keeps those paths. The same folder and options give the same bytes.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np, skimage.io
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for label in (0, 1):
...     (root / "images" / str(label)).mkdir(parents=True)
...     image = np.zeros((16, 16), np.uint8); image[4:12, 4:12] = 255 * label
...     skimage.io.imsave(root / "images" / str(label) / f"a{label}.png", image,
...                       check_contrast=False)
>>> (root / "masks" / "object").mkdir(parents=True)
>>> skimage.io.imsave(root / "masks" / "object" / "a1.png", image, check_contrast=False)
>>> from probes import ProbeSet
>>> probe = ProbeSet(import_folder(root / "images", root / "own.h5", masks=root / "masks"))
>>> probe.name, probe.labels[:].tolist(), probe.target, probe.image_names().tolist()
('images', [0, 1], 'object', ['0/a0.png', '1/a1.png'])
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import skimage.io
from skimage.transform import resize

from .arrays import check_name, to_grey, write_arrays
from .atomic import check_output_path
from .errors import ProbeError, first_line
from .writer import progress_bar

#: Suffixes of the image files read (any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Class folders of the labels-by-folder layout: name -> label.
CLASS_FOLDERS = {"0": 0, "1": 1}


def import_folder(folder: str | os.PathLike, out: str | os.PathLike, *,
                  labels: str | os.PathLike | None = None,
                  masks: str | os.PathLike | None = None, target: str | None = None,
                  name: str | None = None, size: int | None = None, force: bool = False,
                  progress: bool = False) -> Path:
    """Read the images of ``folder`` (and the mask images of ``masks``) into a probe file.

    Parameters
    ----------
    folder : path
        The images, in class folders ``0`` and ``1`` or, with ``labels``, in ``folder`` itself.
    out : path
        The probe file to write (nothing is written on any error).
    labels : path, optional
        CSV with columns ``name`` and ``label`` (instead of class folders).
    masks : path, optional
        Folder of region folders of mask images (module docstring).
    target : str, optional
        The region localization is scored on (default: ``square``, else the only region).
    name : str, optional
        The set's name in the tables (default: the folder's name).
    size : int, optional
        Resize every image and mask to ``size`` x ``size`` px.
    force : bool
        Overwrite an existing ``out``.
    progress : bool
        Show a progress bar (on terminals).

    Returns
    -------
    Path of the written file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ProbeError(f"{folder} is not a folder of images", parameter="folder")
    name = check_name(folder.resolve().name if name is None else name)
    if size is not None and (not isinstance(size, int) or size < 8):
        raise ProbeError(f"must be a side of at least 8 px (got {size})", parameter="size")
    check_output_path(out, force)  # before the reading, which may take long
    paths, label_values = (_listed(folder, Path(labels)) if labels is not None
                           else _by_class_folder(folder))
    names = [path.relative_to(folder).as_posix() for path in paths]
    regions = _mask_files(Path(masks), paths) if masks is not None else {}
    images, shapes = [], {}
    bar = progress_bar(len(paths), f"import {name}", progress)
    for path in paths:
        image = _square(read_image(path), path, size, shapes)
        images.append(_resized(image, size, order=1))
        bar.update()
    bar.close()
    region_masks = {region: _region_masks(files, paths, shapes, size)
                    for region, files in regions.items()}
    params = {"size": size, "labels": "folders" if labels is None else Path(labels).name,
              "grey": "BT.709 luma (probes.to_grey)"}
    return write_arrays(out, np.stack(images), label_values, region_masks or None, name=name,
                        target=target, names=names, params=params, force=force,
                        source=f"densevis import {folder}"
                               + (f" --masks {masks}" if masks is not None else ""))


def read_image(path: Path) -> np.ndarray:
    """The grey levels (H, W) uint8 of an image file (:func:`probes.to_grey`)."""
    try:
        # skimage's note on 1-bit images (read as 0/255 anyway), imageio's on plugins it tries
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = skimage.io.imread(path)
    except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
        raise ProbeError(f"cannot read image {path} ({first_line(exc)}); give PNG, JPEG, BMP "
                         f"or TIFF files") from None
    return to_grey(pixels, what=f"image {path}")


def _images_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file()
                  and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES)


def _by_class_folder(folder: Path) -> tuple[list[Path], np.ndarray]:
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir()
                        and not p.name.startswith("."))
    odd = [sub for sub in subfolders if sub not in CLASS_FOLDERS]
    if odd or not subfolders:
        found = f"folders {', '.join(odd)}" if odd else "no class folders"
        raise ProbeError(f"{folder} has {found}; put the images in {folder}/0 (negatives) and "
                         f"{folder}/1 (positives), or list their labels in a CSV file "
                         f"(--labels)", parameter="folder")
    paths, labels = [], []
    for sub in subfolders:
        found = _images_in(folder / sub)
        paths += found
        labels += [CLASS_FOLDERS[sub]] * len(found)
    if not paths:
        raise ProbeError(f"{folder}/0 and {folder}/1 hold no images (files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)})", parameter="folder")
    return paths, np.array(labels, np.uint8)


def _listed(folder: Path, table: Path) -> tuple[list[Path], np.ndarray]:
    if not table.is_file():
        raise ProbeError(f"{table} not found; give a CSV file with columns name,label",
                         parameter="labels")
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProbeError(f"{table} is not a readable CSV file ({first_line(exc)})",
                         parameter="labels") from None
    if not rows or not {"name", "label"} <= set(rows[0]):
        raise ProbeError(f"{table} needs the columns name and label and one row per image",
                         parameter="labels")
    given = {}
    for line, row in enumerate(rows, start=2):
        if (row["label"] or "").strip() not in ("0", "1"):
            raise ProbeError(f"{table} line {line}: label {row['label']!r} of {row['name']!r} is"
                             f" not 0 or 1", parameter="labels")
        if row["name"] in given:
            raise ProbeError(f"{table} line {line}: {row['name']!r} is listed twice",
                             parameter="labels")
        given[row["name"]] = int(row["label"])
    paths = _images_in(folder)
    unlisted = [path.name for path in paths if path.name not in given]
    missing = sorted(set(given) - {path.name for path in paths})
    if unlisted or missing or not paths:
        problem = (f"image {unlisted[0]} in {folder} has no row" if unlisted else
                   f"{missing[0]!r} is not an image file in {folder}" if missing else
                   f"{folder} holds no images")
        raise ProbeError(f"{table}: {problem}; list each image of {folder} once (name is the "
                         f"file name, e.g. img1.png)", parameter="labels")
    return paths, np.array([given[path.name] for path in paths], np.uint8)


def _mask_files(masks: Path, paths: list[Path]) -> dict[str, dict[int, Path]]:
    """Region -> {image index -> its mask file}."""
    if not masks.is_dir():
        raise ProbeError(f"{masks} is not a folder of region folders (MASKS/<region>/<image "
                         f"name>.png)", parameter="masks")
    stems: dict[str, int] = {}
    for k, path in enumerate(paths):
        if path.stem in stems:
            raise ProbeError(f"images {paths[stems[path.stem]]} and {path} share the name "
                             f"{path.stem!r}, so a mask file cannot tell them apart; rename one",
                             parameter="masks")
        stems[path.stem] = k
    regions = {}
    for region in sorted(p for p in masks.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files: dict[int, Path] = {}
        for mask in _images_in(region):
            if mask.stem not in stems:
                raise ProbeError(f"mask {mask} belongs to no image (no image is named "
                                 f"{mask.stem}.*); its name must be its image's name",
                                 parameter="masks")
            if stems[mask.stem] in files:
                raise ProbeError(f"masks {files[stems[mask.stem]]} and {mask} are of one image",
                                 parameter="masks")
            files[stems[mask.stem]] = mask
        if not files:
            raise ProbeError(f"region folder {region} holds no mask images", parameter="masks")
        regions[region.name] = files
    if not regions:
        raise ProbeError(f"{masks} holds no region folders (MASKS/<region>/<image name>.png)",
                         parameter="masks")
    return regions


def _square(image: np.ndarray, path: Path, size: int | None, shapes: dict) -> np.ndarray:
    """``image``, checked square and (without ``size``) of the first image's size; ``shapes``
    records each image's shape (its masks must have it)."""
    height, width = image.shape
    if height != width:
        raise ProbeError(f"image {path} is {width}x{height} px, not square; crop or pad it to a "
                         f"square first", parameter="folder")
    if size is None and shapes:
        first, shape = next(iter(shapes.items()))
        if shape != image.shape:
            raise ProbeError(f"image {path} is {width}x{height} px but {first} is "
                             f"{shape[1]}x{shape[0]}; all images must share one size: resize "
                             f"them with --size", parameter="folder")
    shapes[path] = image.shape
    return image


def _resized(image: np.ndarray, size: int | None, order: int) -> np.ndarray:
    """``image`` at ``size`` x ``size`` px: bilinear (``order=1``, anti-aliased when shrinking,
    rounded grey levels) or nearest neighbour (``order=0``, masks)."""
    if size is None or image.shape[0] == size:
        return image
    scaled = resize(image.astype(np.float64), (size, size), order=order, mode="edge",
                    anti_aliasing=order > 0 and size < image.shape[0], preserve_range=True)
    if order == 0:
        return scaled > 0.5
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _region_masks(files: dict[int, Path], paths: list[Path], shapes: dict,
                  size: int | None) -> np.ndarray:
    side = size or shapes[paths[0]][0]
    masks = np.zeros((len(paths), side, side), bool)
    for k, mask_path in files.items():
        mask = read_mask(mask_path)
        if mask.shape != shapes[paths[k]]:
            raise ProbeError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} px but its "
                             f"image {paths[k]} is {shapes[paths[k]][1]}x{shapes[paths[k]][0]}",
                             parameter="masks")
        masks[k] = _resized(mask, size, order=0)
    return masks


def read_mask(path: Path) -> np.ndarray:
    """Bool (H, W) of a mask image: inside where any colour channel is non-zero (alpha is not a
    colour)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.asarray(skimage.io.imread(path))
    except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
        raise ProbeError(f"cannot read mask {path} ({first_line(exc)})",
                         parameter="masks") from None
    if pixels.ndim == 3:
        pixels = pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., :1]
        return (pixels != 0).any(axis=-1)
    return pixels != 0
