#!/usr/bin/env python3
"""Train the shipped digits CNN and export it to ``axkern/data/digits_cnn.npz``.

Data: scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits that ship inside
scikit-learn, no download). Split: ``train_test_split(test_size=0.25, random_state=0,
stratify=labels)``; the held-out indices are also stored in the model file, so axkern
evaluates exactly the same 450 images at run time whatever scikit-learn's version.

Training framework: none. This script is plain NumPy (hand-written forward and backward
passes, Adam), so re-running it needs only NumPy and scikit-learn (for the data). It runs in
well under a minute on two cores and is deterministic for a given seed.

Network (NHWC activations, HWIO weights, inputs = pixel / 16 in [0, 1])::

    conv1  3x3, 1 -> 8,   SAME, ReLU           8x8x8
    conv2  3x3, 8 -> 16,  SAME, ReLU, maxpool  4x4x16
    conv3  3x3, 16 -> 32, SAME, ReLU, maxpool  2x2x32
    dense1 128 -> 10 (logits)

Usage::

    python tools/train_digits.py [--epochs 40] [--seed 0] [--output digits_cnn.npz]

The output goes to the current directory unless ``--output`` says otherwise: the shipped
model (``axkern/data/digits_cnn.npz``) is replaced only when named, since the survey figures
of the docs are its figures, and other NumPy / scikit-learn versions than its own can train a
slightly different model from the same seed.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = "digits_cnn.npz"
SPLIT = dict(test_size=0.25, random_state=0)


def load_split():
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit('training needs scikit-learn: pip install "axkern[survey]"')
    d = load_digits()
    idx = np.arange(len(d.target))
    train_idx, test_idx = train_test_split(idx, stratify=d.target, **SPLIT)
    x = (d.images.astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1) NHWC in [0, 1]
    return x, d.target.astype(np.int64), np.sort(train_idx), np.sort(test_idx)


# ------------------------------------------------------------------ layers with backward passes
def im2col(x, kh, kw):
    """3x3 SAME stride-1 patches: (N, H, W, C) -> (N*H*W, kh*kw*C)."""
    n, h, w, c = x.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    cols = np.empty((n, h, w, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + h, j:j + w, :]
    return cols.reshape(n * h * w, kh * kw * c)


def col2im(dcols, shape, kh, kw):
    n, h, w, c = shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    d = dcols.reshape(n, h, w, kh, kw, c)
    dxp = np.zeros((n, h + kh - 1, w + kw - 1, c), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i:i + h, j:j + w, :] += d[:, :, :, i, j, :]
    return dxp[:, ph:ph + h, pw:pw + w, :]


def conv_fwd(x, w, b):
    kh, kw, c, o = w.shape
    cols = im2col(x, kh, kw)
    y = cols @ w.reshape(-1, o) + b
    return y.reshape(x.shape[:3] + (o,)), cols


def conv_bwd(dy, cols, x_shape, w):
    kh, kw, c, o = w.shape
    dy2 = dy.reshape(-1, o)
    dw = (cols.T @ dy2).reshape(w.shape)
    db = dy2.sum(0)
    dx = col2im(dy2 @ w.reshape(-1, o).T, x_shape, kh, kw)
    return dx, dw, db


def pool_fwd(x):
    n, h, w, c = x.shape
    r = x.reshape(n, h // 2, 2, w // 2, 2, c)
    y = r.max(axis=(2, 4))
    mask = r == y[:, :, None, :, None, :]
    # break ties so that the gradient goes to exactly one input per window
    mask &= np.cumsum(np.cumsum(mask, axis=2), axis=4) == 1
    return y, mask


def pool_bwd(dy, mask):
    n, h2, _, w2, _, c = mask.shape
    return (mask * dy[:, :, None, :, None, :]).reshape(n, h2 * 2, w2 * 2, c)


class Net:
    SHAPES = {"conv1": (3, 3, 1, 8), "conv2": (3, 3, 8, 16), "conv3": (3, 3, 16, 32),
              "dense1": (128, 10)}

    def __init__(self, rng):
        self.p = {}
        for name, shape in self.SHAPES.items():
            fan_in = int(np.prod(shape[:-1]))
            self.p[name + "/w"] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            self.p[name + "/b"] = np.zeros(shape[-1], np.float32)

    def forward(self, x, keep=False):
        p, c = self.p, {}
        h1, c["cols1"] = conv_fwd(x, p["conv1/w"], p["conv1/b"])
        a1 = np.maximum(h1, 0)
        h2, c["cols2"] = conv_fwd(a1, p["conv2/w"], p["conv2/b"])
        a2 = np.maximum(h2, 0)
        m2, c["mask2"] = pool_fwd(a2)
        h3, c["cols3"] = conv_fwd(m2, p["conv3/w"], p["conv3/b"])
        a3 = np.maximum(h3, 0)
        m3, c["mask3"] = pool_fwd(a3)
        f = m3.reshape(len(x), -1)  # (H, W, C) order, as axkern's Flatten
        logits = f @ p["dense1/w"] + p["dense1/b"]
        if keep:
            c.update(x=x, h1=h1, a1=a1, h2=h2, m2=m2, h3=h3, m3=m3, f=f)
            return logits, c
        return logits

    def backward(self, dlogits, c):
        p, g = self.p, {}
        g["dense1/w"] = c["f"].T @ dlogits
        g["dense1/b"] = dlogits.sum(0)
        df = dlogits @ p["dense1/w"].T
        dm3 = df.reshape(c["m3"].shape)
        dh3 = pool_bwd(dm3, c["mask3"]) * (c["h3"] > 0)
        dm2, g["conv3/w"], g["conv3/b"] = conv_bwd(dh3, c["cols3"], c["m2"].shape, p["conv3/w"])
        dh2 = pool_bwd(dm2, c["mask2"]) * (c["h2"] > 0)
        da1, g["conv2/w"], g["conv2/b"] = conv_bwd(dh2, c["cols2"], c["a1"].shape, p["conv2/w"])
        dh1 = da1 * (c["h1"] > 0)
        _, g["conv1/w"], g["conv1/b"] = conv_bwd(dh1, c["cols1"], c["x"].shape, p["conv1/w"])
        return g


def softmax_xent(logits, y):
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(1, keepdims=True)
    loss = -np.mean(np.log(prob[np.arange(len(y)), y] + 1e-12))
    d = prob
    d[np.arange(len(y)), y] -= 1
    return loss, d / len(y)


def shift_augment(x, rng):
    """Random shifts by up to one pixel (zero fill): cheap robustness for 8x8 digits."""
    out = np.zeros_like(x)
    for i in range(len(x)):
        dy, dx = rng.integers(-1, 2, size=2)
        src = x[i, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
        out[i, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def train(x, y, epochs, seed, batch=32, lr=3e-3, weight_decay=1e-4, log=print):
    rng = np.random.default_rng(seed)
    net = Net(rng)
    m = {k: np.zeros_like(v) for k, v in net.p.items()}
    v = {k: np.zeros_like(v) for k, v in net.p.items()}
    b1, b2, step = 0.9, 0.999, 0
    for ep in range(epochs):
        order = rng.permutation(len(x))
        rate = lr * 0.5 * (1 + np.cos(np.pi * ep / epochs))  # cosine decay
        xe = shift_augment(x, rng) if ep < epochs - 5 else x
        tot = 0.0
        for i in range(0, len(x), batch):
            sel = order[i:i + batch]
            logits, cache = net.forward(xe[sel], keep=True)
            loss, d = softmax_xent(logits, y[sel])
            tot += loss * len(sel)
            grads = net.backward(d.astype(np.float32), cache)
            step += 1
            for k, gk in grads.items():
                if k.endswith("/w"):
                    gk = gk + weight_decay * net.p[k]
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mh = m[k] / (1 - b1 ** step)
                vh = v[k] / (1 - b2 ** step)
                net.p[k] -= (rate * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        if ep % 5 == 4 or ep == epochs - 1:
            acc = np.mean(np.argmax(net.forward(x), 1) == y)
            log(f"epoch {ep + 1:3d}  loss {tot / len(x):.4f}  train accuracy {100 * acc:.2f}%")
    return net


def export(net, test_idx, train_idx, path, seed, epochs):
    sys.path.insert(0, os.path.join(HERE, os.pardir))
    from axkern.nn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential

    p = net.p
    model = Sequential([
        Conv2D(p["conv1/w"], p["conv1/b"], padding="SAME", name="conv1"), ReLU(),
        Conv2D(p["conv2/w"], p["conv2/b"], padding="SAME", name="conv2"), ReLU(), MaxPool2D(2),
        Conv2D(p["conv3/w"], p["conv3/b"], padding="SAME", name="conv3"), ReLU(), MaxPool2D(2),
        Flatten(), Dense(p["dense1/w"], p["dense1/b"], name="dense1"),
    ], input_shape=(8, 8, 1), name="digits_cnn", metadata={
        "dataset": "sklearn.datasets.load_digits",
        "input_scale": 1.0 / 16.0,
        "input_layout": "images[..., None] * input_scale: (N, 8, 8, 1) NHWC in [0, 1]",
        "split": "sklearn.model_selection.train_test_split(test_size=0.25, random_state=0, "
                 "stratify=target)",
        "test_indices": [int(i) for i in test_idx],
        "num_train": int(len(train_idx)),
        "signed": False,
        "trained_by": f"tools/train_digits.py (plain NumPy, seed {seed}, {epochs} epochs)",
    })
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.save(path)
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    t0 = time.time()
    x, y, train_idx, test_idx = load_split()
    net = train(x[train_idx], y[train_idx], args.epochs, args.seed)
    acc = np.mean(np.argmax(net.forward(x[test_idx]), 1) == y[test_idx])
    print(f"held-out accuracy (float, NumPy training graph): {100 * acc:.2f}% on {len(test_idx)} images")
    model = export(net, test_idx, train_idx, args.output, args.seed, args.epochs)
    acc2 = model.accuracy(x[test_idx], y[test_idx])
    print(f"held-out accuracy (axkern.nn float mode):        {100 * acc2:.2f}%")
    print(f"wrote {os.path.normpath(args.output)} ({os.path.getsize(args.output)} bytes) "
          f"in {time.time() - t0:.1f} s")
    if acc2 < 0.97:
        print("warning: held-out accuracy below the 97% target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
