"""Every committed reference bitstream decodes to its recorded hashes; the current version's
bitstreams are re-produced byte for byte by the encoder."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nnr  # noqa: E402
from conformance.vectors import decoded_hashes, vector_files  # noqa: E402
from formats.container import FORMAT_VERSION, read_container  # noqa: E402

VECTORS = vector_files()


def test_vectors_exist_for_current_version():
    assert any(p.parent.name == f"v{FORMAT_VERSION}" for p in VECTORS)


@pytest.mark.parametrize("record", VECTORS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector_decodes_to_golden_hashes(record: Path):
    expected = json.loads(record.read_text())
    data = record.with_suffix(".nnr").read_bytes()
    got = decoded_hashes(data)
    assert got == {"tensors": expected["tensors"], "model": expected["model"]}


@pytest.mark.parametrize("record", [p for p in VECTORS if p.parent.name == f"v{FORMAT_VERSION}"],
                         ids=lambda p: p.stem)
def test_encoder_reproduces_current_vectors(record: Path):
    """Same bytes, except the producer string in the metadata (it names the nnr release)."""
    expected = json.loads(record.read_text())
    data = nnr.encode(record.with_suffix(".onnx"), **expected["options"])
    committed = record.with_suffix(".nnr").read_bytes()
    if nnr.open(committed).metadata()["producer"] == f"nnr {nnr.__version__}":
        assert data == committed
    new, old = read_container(data), read_container(committed)
    assert new.graph == old.graph
    assert {k: v for k, v in new.meta.items() if k != "producer"} == \
        {k: v for k, v in old.meta.items() if k != "producer"}
    assert [bytes(u.to_bytes()) for u in nnr.open(data).units()] == \
        [bytes(u.to_bytes()) for u in nnr.open(committed).units()]
