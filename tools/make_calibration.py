"""Write a calibration .npz (model inputs and labels) from the repository's real data.

    python tools/make_calibration.py imagenet --photos 0:10 -o cal.npz   # 8 crops each, input 'image'
    python tools/make_calibration.py imagenet --photos 10:20 -o held.npz
    python tools/make_calibration.py imagenet --photos 0:10 --views -o cal.npz   # ~38 grid views each
    python tools/make_calibration.py unlabelled -o other.npz             # grid views of the packages' 8 photos
    python tools/make_calibration.py mnist --count 500 -o digits.npz     # held-out MNIST digits

The arrays are named after the corpus models' inputs (EfficientNet-Lite0 and the MNIST CNN
both call theirs 'image'), so the files feed nnr-encode --calibration and nnr-search.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from conformance.inputs import imagenet, mnist_test, photo_views, unlabelled_views

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", choices=("imagenet", "unlabelled", "mnist"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--photos", default="0:20", help="imagenet: photo range START:STOP of the 20 (default all)")
    ap.add_argument("--views", action="store_true",
                    help="imagenet: grid views of each photo (three scales, up to 3×3 positions, mirrored) "
                         "instead of 8 crops; more inputs resolve agreement more finely")
    ap.add_argument("--count", type=int, default=1000, help="mnist: how many held-out digits (default 1000)")
    args = ap.parse_args(argv)
    if args.data == "imagenet":
        try:
            start, stop = (int(v) for v in args.photos.split(":"))
        except ValueError:
            ap.error(f"--photos {args.photos!r}: give START:STOP, e.g. 0:10")
        if not 0 <= start < stop <= 20:
            ap.error(f"--photos {args.photos}: there are 20 photos, give 0 ≤ START < STOP ≤ 20")
        if args.views:
            x, y = photo_views(range(start, stop))
        else:
            x, y = imagenet()
            photo = np.repeat(np.arange(len(x) // 8), 8)
            keep = (photo >= start) & (photo < stop)
            x, y = x[keep], y[keep]
    elif args.data == "unlabelled":
        x, y = unlabelled_views(), None
    else:
        x, y = mnist_test()
        x, y = x[:args.count], y[:args.count]
    if not len(x):
        ap.error("that selection is empty")
    np.savez(args.output, image=x, **({} if y is None else {"labels": y}))
    print(f"wrote {args.output}: {len(x)} inputs" + (", no labels" if y is None else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
