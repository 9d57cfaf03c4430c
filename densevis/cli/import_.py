"""Import a folder of your own images (and region masks) into a probe file.

The file is a probe file like those of 'densevis generate': train, evaluate, explain and
analyze read it. Labels come from class folders (FOLDER/0 negatives, FOLDER/1 positives) or a
CSV file (--labels, columns name,label: the file names in FOLDER). Masks (--masks MASKDIR) are
mask images MASKDIR/<region>/<image name>.png: a pixel is inside where any colour channel is
non-zero; an image without a mask file has an empty mask there. 'densevis analyze' scores
localization on the --target region (default: square, else the only region) and the area-corrected mass
(<region>_mass) on every region; the edge and small-object hypotheses, the label rules
edge/small and the training's hard-case weights need drawn objects, which imported images do
not have (see the probe-file contract, docs/DESIGN.md).

Images: PNG, JPEG, BMP or TIFF, taken in sorted order of their path (their index in the file;
the file keeps the paths as 'names'). Colour becomes grey by the BT.709 luma 0.2125 R + 0.7154 G
+ 0.0721 B (alpha dropped), 16-bit images are scaled to 8 bits. All images must be square and of
one size; --size resizes images bilinearly (anti-aliased when shrinking) and masks by nearest
neighbour. The file's seed is -1 (imported, not drawn); the same folder and options give the
same bytes. Nothing is written unless every image and mask is read.

examples:
  densevis import photos --out photos.h5                  # photos/0/*.png, photos/1/*.png
  densevis import scans --labels labels.csv --masks masks --target lesion --out scans.h5
  densevis import photos --masks masks --size 128 --name mine --out mine.h5 --force
  densevis explain --checkpoint model.pt --data scans.h5 --out scans-maps.h5
  densevis analyze --maps scans-maps.h5 --data scans.h5 --out scans-analysis
"""

from __future__ import annotations

import argparse

HELP = "import a folder of your own images (and mask images) into a probe file"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER",
                        help="the images: FOLDER/0/* and FOLDER/1/*, or FOLDER/* with --labels")
    parser.add_argument("--out", required=True, metavar="SET.h5", help="probe file to write")
    parser.add_argument("--labels", metavar="LABELS.csv", default=None,
                        help="CSV with columns name,label (0 or 1) for the images in FOLDER")
    parser.add_argument("--masks", metavar="MASKDIR", default=None,
                        help="mask images MASKDIR/<region>/<image name>.png (non-zero = inside)")
    parser.add_argument("--target", metavar="REGION", default=None,
                        help="the region localization is scored on (default: square, else the "
                             "only region)")
    parser.add_argument("--name", default=None,
                        help="the set's name in the tables (default: the folder's name)")
    parser.add_argument("--size", type=int, default=None, metavar="PX",
                        help="resize every image and mask to PX x PX (default: keep the size)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def run(args: argparse.Namespace) -> int:
    from probes import ProbeSet
    from probes.folder import import_folder

    path = import_folder(args.folder, args.out, labels=args.labels, masks=args.masks,
                         target=args.target, name=args.name, size=args.size, force=args.force,
                         progress=True)
    with ProbeSet(path) as probe:
        positives = int(probe.labels[:].sum())
        regions = ", ".join(probe.regions) or "none"
        print(f"wrote {path}: set {probe.name}, {len(probe)} images of {probe.size}x{probe.size}"
              f", {positives} positive; regions: {regions}; localization target: "
              f"{probe.target or 'none'}")
    return 0
