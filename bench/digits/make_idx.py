#!/usr/bin/env python3
"""Writes the UCI 8x8 handwritten digits (1797 images, scikit-learn's
`load_digits`) as MNIST-format IDX files, the way a user would download
MNIST: train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte.

The split is fixed, seeded and stratified (by default 360 test images, 36
per class; the other 1437 train). Pixels 0..16 are scaled to 0..255.

    python3 bench/digits/make_idx.py [OUT_DIR] [--test N] [--seed S]

OUT_DIR defaults to bench/out/digits/ (git-ignored). Needs numpy and
scikit-learn (`pip install scikit-learn`).
"""

import argparse
import os
import struct
import sys

import numpy as np

try:
    from sklearn.datasets import load_digits
except ImportError:  # pragma: no cover - a message instead of a traceback
    sys.exit("make_idx.py: scikit-learn is missing; install it with `pip install scikit-learn`")


def write_idx(path, array):
    """IDX: two zero bytes, type 0x08 (ubyte), number of dims, big-endian
    u32 sizes, then the data in C order."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        for d in array.shape:
            f.write(struct.pack(">I", d))
        f.write(array.tobytes())


def stratified_split(labels, n_test, seed):
    """Test indices: n_test split over the classes in proportion to their
    counts (largest remainders), each class shuffled with one seeded RNG."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / len(labels)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n_test - take.sum()]:
        take[i] += 1
    test = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test.extend(idx[:k])
    test = np.sort(np.array(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    # Shuffle the training order too, so no file is sorted by class.
    train = rng.permutation(train)
    test = rng.permutation(test)
    return train, test


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "out", "digits"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=default_out)
    ap.add_argument("--test", type=int, default=360, help="heldout images (default 360)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = ap.parse_args()

    digits = load_digits()
    images = digits.images  # (1797, 8, 8), values 0..16
    labels = digits.target.astype(np.uint8)
    pixels = np.rint(images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    train, test = stratified_split(labels, args.test, args.seed)

    os.makedirs(args.out, exist_ok=True)
    write_idx(os.path.join(args.out, "train-images-idx3-ubyte"), pixels[train])
    write_idx(os.path.join(args.out, "train-labels-idx1-ubyte"), labels[train])
    write_idx(os.path.join(args.out, "t10k-images-idx3-ubyte"), pixels[test])
    write_idx(os.path.join(args.out, "t10k-labels-idx1-ubyte"), labels[test])
    per_class = np.bincount(labels[test], minlength=10)
    print(
        f"wrote {len(train)} train / {len(test)} test 8x8 digits to {args.out} "
        f"(test per class: {' '.join(map(str, per_class))})"
    )


if __name__ == "__main__":
    main()
