"""Every committed reference bitstream decodes to its recorded hashes; the current version's
bitstreams are re-produced by the encoder; every damaged file is refused as documented."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nnr  # noqa: E402
from nnr.codec.entropy import GEOMETRIC, HISTOGRAM  # noqa: E402
from conformance.vectors import (ROBUSTNESS, VECTOR_ROOT, cases, current_robustness_cases, decoded_hashes,  # noqa: E402
                                 handmade_vectors, legacy_robustness_cases, replay, reproducible, same_bitstream,
                                 vector_files)
from nnr.formats.container import FORMAT_VERSION  # noqa: E402
from nnr.cli import decode_main  # noqa: E402

VECTORS = vector_files()
CURRENT = [p for p in VECTORS if p.parent.name == f"v{FORMAT_VERSION}" and reproducible(p)]
DAMAGED = json.loads((ROBUSTNESS / "robustness.json").read_text())


def test_every_current_case_has_a_vector():
    assert sorted(p.stem for p in CURRENT) == sorted(cases())


def test_vectors_of_every_older_version_are_kept():
    versions = {int(p.parent.name[1:]) for p in VECTORS}
    assert versions == set(range(1, FORMAT_VERSION + 1))


@pytest.mark.parametrize("record", VECTORS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector_decodes_to_golden_hashes(record: Path):
    expected = json.loads(record.read_text())
    got = decoded_hashes(record.with_suffix(".nnr").read_bytes())
    assert got == {"tensors": expected["tensors"], "model": expected["model"]}


@pytest.mark.parametrize("record", CURRENT, ids=lambda p: p.stem)
def test_encoder_reproduces_current_vectors(record: Path):
    """Same units, except the producer string in the metadata (it names the nnr release) and the
    zlib bytes of GRPH, compared decompressed (zlib builds such as zlib-ng compress differently).
    The options replayed are those the file carries, defaults included."""
    assert same_bitstream(replay(record), record.with_suffix(".nnr").read_bytes())


@pytest.mark.parametrize("record", [p for p in CURRENT if json.loads(p.read_text())["options"].get("lossless")],
                         ids=lambda p: p.stem)
def test_lossless_vectors_rebuild_the_source_byte_for_byte(record: Path):
    source = onnx.load(record.with_suffix(".onnx"))
    assert nnr.decode(record.with_suffix(".nnr").read_bytes()).SerializeToString() == source.SerializeToString()


def test_same_bitstream_sees_a_changed_tensor():
    a = (ROOT / "conformance/vectors" / f"v{FORMAT_VERSION}" / "mlp_lossy.nnr").read_bytes()
    b = (ROOT / "conformance/vectors" / f"v{FORMAT_VERSION}" / "mlp_coarse.nnr").read_bytes()
    assert same_bitstream(a, a) and not same_bitstream(a, b)


def test_robustness_vectors_are_what_the_generator_makes():
    """The current version's damaged files and those made from frozen older vectors are re-made
    byte for byte; older ones stay as written."""
    made = {k: v[:3] for k, v in current_robustness_cases().items()}
    assert sorted(made) == sorted(k for k in DAMAGED if k.startswith(f"v{FORMAT_VERSION}_"))
    legacy = {k: v[:3] for k, v in legacy_robustness_cases().items()}
    assert legacy.keys() <= DAMAGED.keys()
    made |= legacy
    for name, (data, error, _) in made.items():
        assert (ROBUSTNESS / f"{name}.nnr").read_bytes() == data and DAMAGED[name]["error"] == error


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_file_is_refused_with_the_documented_error(name, tmp_path, capsys):
    path = ROBUSTNESS / f"{name}.nnr"
    with pytest.raises(nnr.NnrError) as err:
        nnr.decode(path.read_bytes())
    assert type(err.value).__name__ == DAMAGED[name]["error"]
    out = tmp_path / "out.onnx"
    assert decode_main([str(path), "-o", str(out)]) == 3
    assert "Traceback" not in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_handmade_vectors_are_what_the_generator_makes():
    for name, (_, data, _) in handmade_vectors().items():
        assert (VECTOR_ROOT / f"v{FORMAT_VERSION}" / f"{name}.nnr").read_bytes() == data


def test_double_rounding_vector_tells_the_two_roundings_apart():
    """Its level 131137 (θ = 255, step 2^-17) is 1 + 2^-11 + 2^-25 in float64: float32 rounds it onto a
    float16 tie, which goes to even (1.0); rounding the float64 once gives 1 + 2^-10."""
    _, data, _ = handmade_vectors()["fp16_double_rounding"]
    got = nnr.open(data).get_tensor("w")
    exact = (131137 * 256 - 255) * 2.0 ** -25
    assert exact == 1 + 2.0 ** -11 + 2.0 ** -25
    assert got[0] == np.float16(np.float32(exact)) == 1.0 and got[1] == -1.0
    assert np.float16(exact) == 1 + 2.0 ** -10


def _table_kinds(r, n_tables: int, n_sym: int) -> list[int]:
    """Kind bytes of a level block's tables, read past their fields."""
    kinds = []
    for _ in range(n_tables):
        kinds.append(r.u8())
        if kinds[-1] == GEOMETRIC:
            r.varint(), r.varint(), r.u16(), r.varint()
        else:
            r.varints(n_sym)
    return kinds


def _coded_paths(data: bytes) -> set[str]:
    """What a file exercises: codings, lossy flags, minifloat formats, main-block table kinds,
    fine bits, storage types."""
    from nnr.codec.bytestream import ByteReader
    from nnr.codec.levelcode import CONTEXT_LANES, read_levels
    from nnr.codec.lossy_decode import main_block_offset
    from nnr.tensorcodec import level_dialect

    f = nnr.open(data)
    lanes = level_dialect(f.version)
    found = set()
    for u in f.units():
        found.add(f"coding{u.coding}:dtype{u.dtype}")
        if u.coding == 2:
            flags, start = main_block_offset(u.body, lanes)
            found.add(f"flags{flags}")
            count = u.numel * (2 if u.dtype in (14, 15) else 1)
            job = read_levels(ByteReader(u.body[start:]), count, lanes)
            if job.s > 0:
                found.add("fine_bits")
            r = ByteReader(u.body[start:])
            r.varint()
            r.u8()
            n_tables = r.u8() if lanes == CONTEXT_LANES else 1
            kinds = _table_kinds(r, n_tables, job.n_sym)
            found.add(f"table{kinds[0]}")
            if lanes == CONTEXT_LANES:
                found.add(f"contexts{n_tables}" if n_tables > 1 else "one_table")
            if n_tables > 1:
                found |= {"contexts"} | {f"context_table{k}" for k in kinds}
                found |= {"context_fine_bits"} if job.s else set()
                found |= {"context_escapes"} if job.escapes.size else set()
        if u.coding == 4:
            found.add(f"minifloat:e{u.body[0]}m{u.body[1]}")
    return found


def test_current_vectors_cover_every_context_path():
    """Context-coded level blocks of 2, 3 and 4 tables, of both table kinds, over coarse symbols
    with fine bits and with escapes, are in some vector of the current version (hand-made ones
    included)."""
    files = sorted((VECTOR_ROOT / f"v{FORMAT_VERSION}").glob("*.nnr"))
    found = set().union(*(_coded_paths(p.read_bytes()) for p in files))
    wanted = {"contexts2", "contexts3", "contexts4", f"context_table{GEOMETRIC}", f"context_table{HISTOGRAM}",
              "context_fine_bits", "context_escapes"}
    assert wanted <= found, sorted(wanted - found)


def test_current_vectors_cover_every_path():
    """Every coding, lossy flag combination, minifloat width, table kind, fine bits and storage
    type of the current version is in some reference vector."""
    found = set().union(*(_coded_paths(p.with_suffix(".nnr").read_bytes()) for p in CURRENT))
    wanted = {"flags0", "flags1", "flags2", "flags3", "fine_bits", "minifloat:e4m3", "minifloat:e5m2",
              f"table{GEOMETRIC}", f"table{HISTOGRAM}",
              "minifloat:e5m10", "coding0:dtype7", "coding3:dtype1", "contexts", "one_table"}
    wanted |= {f"coding1:dtype{t}" for t in (1, 10, 16, 11, 14, 15)}   # lossless fp32, fp16, bf16, fp64, complex
    wanted |= {f"coding2:dtype{t}" for t in (1, 10, 16, 14)}
    assert wanted <= found, sorted(wanted - found)


def test_a_vector_replays_the_default_gain_reconstruction():
    """The default ``ecsq`` offset (negative where zeroed weights' energy is given back) is
    re-produced by the encoder on every machine CI runs on, through a vector that names it."""
    from nnr.codec.lossy_decode import FLAG_NEGATIVE_THETA

    named = [p for p in CURRENT if json.loads(p.read_text())["options"].get("reconstruction") == "gain"]
    assert named
    weights = [u for p in named for u in nnr.open(p.with_suffix(".nnr").read_bytes()).units()
               if u.coding == 2 and len(u.dims) >= 2]
    assert weights and all(u.body[0] & FLAG_NEGATIVE_THETA and u.body[1] > 0 for u in weights)
