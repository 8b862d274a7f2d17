"""codec.rans: the integer rANS rules SPEC.md states, checked against constriction and a
line-by-line reference of the lane coder."""

import importlib
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from nnr.codec import rans
from nnr.codec.rans_encode import choose_lanes, encode_lanes
from nnr.errors import CorruptionError


def _constriction_words(symbols: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    import constriction
    coder = constriction.stream.stack.AnsCoder()
    model = constriction.stream.model.Categorical(np.asarray(freqs, dtype=np.float64), perfect=False)
    coder.encode_reverse(np.asarray(symbols, dtype=np.int32), model)
    return coder.get_compressed()


def _random_table(rng: np.random.Generator, n: int, top: int) -> np.ndarray:
    f = rng.integers(0, top, size=n) * (rng.random(n) < 0.7)
    f[rng.integers(n)] += 1
    return f


def test_stack_decoder_reads_what_constriction_writes():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(2, 600))
        freqs = _random_table(rng, n, int(rng.choice([10, 5000, 1 << 31])))
        p = np.diff(rans.stack_cdf(freqs)) / (1 << rans.STACK_PRECISION)
        symbols = rng.choice(n, size=int(rng.integers(0, 1500)), p=p)
        words = _constriction_words(symbols, freqs)
        np.testing.assert_array_equal(rans.stack_decode(words, freqs, symbols.size), symbols)


def test_stack_tables_need_the_float64_rule():
    """The exact rational reading of the v1–v4 table differs from the float64 product on
    some tables; constriction's streams decode only with the float64 one."""
    rng = np.random.default_rng(1)
    for _ in range(2000):
        n = int(rng.integers(2, 40))
        freqs = _random_table(rng, n, 1 << 31)
        total = int(freqs.sum())
        cum = np.concatenate(([0], np.cumsum(freqs)[:-1]))
        exact = [int(Fraction(int(c) * ((1 << 24) - n), total)) + i for i, c in enumerate(cum)]
        if exact != rans.stack_cdf(freqs)[:-1].tolist():
            break
    else:
        pytest.fail("no table where the two readings differ")
    p = np.diff(rans.stack_cdf(freqs)) / (1 << 24)
    symbols = rng.choice(n, size=3000, p=p)
    np.testing.assert_array_equal(rans.stack_decode(_constriction_words(symbols, freqs), freqs, 3000), symbols)


def test_stack_decoder_refuses_bad_streams():
    freqs = np.array([5, 3, 2, 1])
    words = _constriction_words(np.array([0, 1, 2, 1, 0, 0, 3, 1]), freqs)
    with pytest.raises(CorruptionError, match="zero word"):
        rans.stack_decode(np.append(words, np.uint32(0)), freqs, 8)
    with pytest.raises(CorruptionError, match="left over"):
        rans.stack_decode(words, freqs, 7)
    with pytest.raises(CorruptionError, match="left over"):
        rans.stack_decode(np.concatenate(([np.uint32(7)], words)), freqs, 8)
    with pytest.raises(CorruptionError, match="symbols"):
        rans.stack_decode(words, np.array([9]), 8)
    with pytest.raises(CorruptionError, match="nonzero"):
        rans.stack_decode(words, np.array([0, 0, 0]), 8)


def test_every_vector_decodes_with_numpy_and_onnx_alone():
    """With constriction and numba unimportable, every reference vector of every version
    decodes to its recorded hashes."""
    code = ("import sys, json; sys.modules['constriction'] = None; sys.modules['numba'] = None; "
            "from conformance.vectors import vector_files, decoded_hashes; "
            "bad = []; n = 0\n"
            "for rec in vector_files():\n"
            "    r = json.loads(rec.read_text()); n += 1\n"
            "    got = decoded_hashes(rec.with_suffix('.nnr').read_bytes())\n"
            "    if got != {'tensors': r['tensors'], 'model': r['model']}: bad.append(rec.name)\n"
            "print(n, bad); sys.exit(1 if bad or n < 60 else 0)")
    from tests.conftest import ROOT
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]


def test_lane_tables_are_exact_integers():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(1, 300))
        precision = int(rng.integers(max(1, (n - 1).bit_length()), 17))
        freqs = _random_table(rng, n, int(rng.choice([3, 1000, 1 << 31])))
        cdf = rans.lane_cdf(freqs, precision)
        assert cdf[0] == 0 and cdf[-1] == 1 << precision
        assert np.all(np.diff(cdf) >= 1)
        total = int(freqs.sum())
        c = 0
        for i in range(n + 1):
            assert cdf[i] == (c * ((1 << precision) - n)) // total + i
            if i < n:
                c += int(freqs[i])


@pytest.mark.parametrize("freqs, precision, match", [
    (np.array([1, 2, 3]), 1, "does not fit"),
    (np.array([1, 2]), 17, "precision"),
    (np.array([1, -2]), 8, "negative"),
    (np.array([0, 0]), 8, "total"),
    (np.array([1 << 46, 1 << 46]), 8, "total"),
])
def test_lane_tables_refuse_what_no_encoder_writes(freqs, precision, match):
    with pytest.raises(CorruptionError, match=match):
        rans.lane_cdf(freqs, precision)


def _reference_lane_words(symbols: list[int], cdf: list[int], precision: int, n_lanes: int) -> list[int]:
    """SPEC's lane encoder, one symbol at a time in Python integers."""
    q = -(-len(symbols) // n_lanes)
    lanes = [symbols[j::n_lanes] for j in range(n_lanes)]
    state = [rans.LANE_STATE_LOW] * len(lanes)
    emitted = []
    for t in reversed(range(q + 1)):
        for j in reversed(range(len(lanes))):
            if t >= len(lanes[j]):
                continue
            s = lanes[j][t]
            c, f = cdf[s], cdf[s + 1] - cdf[s]
            if state[j] >= f << (32 - precision):
                emitted.append(state[j] & 0xFFFF)
                state[j] >>= 16
            state[j] = ((state[j] // f) << precision) + state[j] % f + c
    head = [h for x in state for h in (x >> 16, x & 0xFFFF)]
    return head + emitted[::-1]


def test_lane_encoder_writes_the_reference_words_and_decodes_back():
    rng = np.random.default_rng(3)
    for trial in range(120):
        n = int(rng.integers(1, 200))
        precision = int(rng.integers(max(1, (n - 1).bit_length()), 17))
        cdf = rans.lane_cdf(_random_table(rng, n, 1000), precision)
        count = int(rng.integers(1, 1200)) if trial else 0
        lanes = int(rng.integers(1, min(count, 40) + 1)) if count else 0
        symbols = rng.choice(n, size=count, p=np.diff(cdf) / (1 << precision))
        words = encode_lanes(symbols, cdf, precision, lanes)
        if count:
            assert words.tolist() == _reference_lane_words(symbols.tolist(), cdf.tolist(), precision, lanes)
        decoded = rans.decode_lanes(words, rans.LaneTable(cdf, precision), count, lanes)
        np.testing.assert_array_equal(decoded, symbols)


def test_lane_encoder_emits_a_word_for_every_symbol_when_each_needs_one():
    """The rarest symbol at the finest precision shifts out a word every time: the encoder's
    word buffer holds exactly one per symbol, the most a block can need."""
    cdf = np.array([0, 1, 1 << 16])
    symbols = np.zeros(500, dtype=np.int64)
    for lanes in (1, 7, 500):
        words = encode_lanes(symbols, cdf, 16, lanes)
        assert words.size == 2 * lanes + symbols.size
        assert words.tolist() == _reference_lane_words(symbols.tolist(), cdf.tolist(), 16, lanes)
        np.testing.assert_array_equal(rans.decode_lanes(words, rans.LaneTable(cdf, 16), 500, lanes), symbols)


def test_lane_table_refuses_a_cdf_that_leaves_slots_without_a_symbol():
    # the lock step gathers from the table without bounds checks, so its size must be C·2**P
    good = rans.lane_cdf(np.array([3, 1]), 4)
    assert rans.LaneTable(good, 4).symbol.size == 16
    assert rans.LaneTable(np.stack([good, good]), 4, np.array([0, 1])).symbol.size == 32
    for cdf in ([0, 10, 15], [1, 10, 16], [0, 10, 10, 16], [0, 12, 8, 16], [16]):
        with pytest.raises(ValueError, match="from 0 to 2\\*\\*4"):
            rans.LaneTable(np.array(cdf), 4)


def test_lane_decoder_refuses_damaged_blocks():
    rng = np.random.default_rng(4)
    cdf = rans.lane_cdf(np.array([50, 20, 10, 5, 1]), 12)
    table = rans.LaneTable(cdf, 12)
    symbols = rng.choice(5, size=5000, p=np.diff(cdf) / 4096)
    words = encode_lanes(symbols, cdf, 12, 7)
    with pytest.raises(CorruptionError, match="runs out|left over|initial state"):
        rans.decode_lanes(words[:-1], table, 5000, 7)
    with pytest.raises(CorruptionError, match="left over"):
        rans.decode_lanes(np.append(words, np.uint16(1)), table, 5000, 7)
    with pytest.raises(CorruptionError, match="holds only"):
        rans.decode_lanes(words[:5], table, 5000, 7)
    with pytest.raises(CorruptionError, match="carries words"):
        rans.decode_lanes(words, table, 0, 0)
    for lanes in (0, 5001):
        with pytest.raises(CorruptionError, match="declares"):
            rans.decode_lanes(words, table, 5000, lanes)
    refused = 0
    for i in rng.choice(words.size, size=60, replace=False):
        bad = words.copy()
        bad[i] ^= np.uint16(1 << int(rng.integers(16)))
        try:
            out = rans.decode_lanes(bad, table, 5000, 7)
        except CorruptionError:
            refused += 1
        else:
            assert out.shape == symbols.shape
    assert refused >= 50


def test_one_symbol_tables_code_no_words():
    cdf = rans.lane_cdf(np.array([5]), 3)
    words = encode_lanes(np.zeros(100, dtype=np.int64), cdf, 3, 4)
    assert words.tolist() == [1, 0] * 4
    np.testing.assert_array_equal(rans.decode_lanes(words, rans.LaneTable(cdf, 3), 100, 4), np.zeros(100))
    with pytest.raises(CorruptionError, match="one-symbol"):
        rans.decode_lanes(np.append(words, np.uint16(3)), rans.LaneTable(cdf, 3), 100, 4)


def test_lanes_follow_the_symbol_and_byte_targets():
    assert choose_lanes(0, 0.0) == 0
    assert choose_lanes(100, 800.0) == 1
    assert choose_lanes(1_000_000, 8_000_000.0) == 489       # at most 2048 symbols per lane
    assert choose_lanes(1_000_000, 80_000_000.0) == 489
    assert choose_lanes(1_000_000, 400_000.0) == 195         # but at least 256 bytes per lane
    assert choose_lanes(1_000_000, 10.0) == 16               # and at most 2**16 symbols


def test_a_lane_longer_than_two_to_the_sixteen_symbols_is_refused():
    """A lock step is never longer than 2**16 steps, whatever a file declares."""
    cdf = rans.lane_cdf(np.array([1, 1]), 1)
    count = (1 << 16) + 1
    words = encode_lanes(np.zeros(count, dtype=np.int64), cdf, 1, 2)
    np.testing.assert_array_equal(rans.decode_lanes(words, rans.LaneTable(cdf, 1), count, 2), np.zeros(count))
    with pytest.raises(CorruptionError, match="declares 1 lanes"):
        rans.decode_lanes(encode_lanes(np.zeros(count, dtype=np.int64), cdf, 1, 1), rans.LaneTable(cdf, 1), count, 1)


def test_rans_decoding_imports_neither_numba_nor_constriction():
    code = ("import sys, numpy as np; from nnr.codec import rans; "
            "cdf = rans.lane_cdf(np.array([1, 1]), 1); rans.LaneTable(cdf, 1); "
            "rans.stack_cdf(np.array([1, 2])); "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('numba', 'constriction')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    from tests.conftest import ROOT
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_blocks_decoded_together_equal_blocks_decoded_alone():
    rng = np.random.default_rng(5)
    blocks, expected = [], []
    for _ in range(40):
        n = int(rng.integers(1, 90))
        precision = int(rng.integers(max(1, (n - 1).bit_length()), 17))
        cdf = rans.lane_cdf(_random_table(rng, n, 500), precision)
        count = int(rng.choice([0, 1, int(rng.integers(2, 4000))]))
        lanes = int(rng.integers(1, min(count, 60) + 1)) if count else 0
        symbols = rng.choice(n, size=count, p=np.diff(cdf) / (1 << precision))
        blocks.append(rans.LaneBlock(encode_lanes(symbols, cdf, precision, lanes),
                                     rans.LaneTable(cdf, precision), count, lanes))
        expected.append(symbols)
    for got, want in zip(rans.decode_lane_blocks(blocks), expected):
        np.testing.assert_array_equal(got, want)
    damaged = list(blocks)
    k = next(i for i, b in enumerate(blocks) if b.count > 100)
    damaged[k] = damaged[k]._replace(words=damaged[k].words[:-1])
    with pytest.raises(CorruptionError):
        rans.decode_lane_blocks(damaged)


def _decoder(blocks: list, rounds: int):
    """A decoder generator that waits for ``blocks`` ``rounds`` times and returns every symbol it got."""
    got = []
    for _ in range(rounds):
        got += (yield blocks)
    return got


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_decoders_driven_in_waves_get_the_symbols_of_one_lock_step(threads):
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(6)
    specs = []
    for k in range(17):
        cdf = rans.lane_cdf(_random_table(rng, 30, 500), 12)
        count = [0, 1, 3000, int(rng.integers(2, 6000))][k % 4]
        lanes = int(rng.integers(1, min(count, 50) + 1)) if count else 0
        symbols = rng.choice(30, size=count, p=np.diff(cdf) / 4096)
        specs.append(([rans.LaneBlock(encode_lanes(symbols, cdf, 12, lanes), rans.LaneTable(cdf, 12), count, lanes)]
                      * (1 + k % 2), 1 + k % 3, symbols))
    with ThreadPoolExecutor(threads) as pool:
        for waves in (1, 2, 5, 40):
            got = rans.run_all([_decoder(blocks, rounds) for blocks, rounds, _ in specs],
                               map if threads == 1 else pool.map, waves)
            for (blocks, rounds, symbols), out in zip(specs, got):
                assert len(out) == len(blocks) * rounds
                for s in out:
                    np.testing.assert_array_equal(s, symbols)
    damaged = [s[0] for s in specs]
    damaged[2] = [damaged[2][0]._replace(words=damaged[2][0].words[:-1])]
    with pytest.raises(CorruptionError):
        rans.run_all([_decoder(blocks, 1) for blocks in damaged], map, 3)


def _reference_context_decode(words: list[int], cdfs: list[list[int]], classes: list[int], precision: int,
                              count: int, n_lanes: int) -> list[int]:
    """SPEC's context-lane decoder, one symbol at a time in Python integers."""
    q, r = divmod(count, n_lanes)
    length = [q + (j < r) for j in range(n_lanes)]
    start = [j * q + min(j, r) for j in range(n_lanes)]
    x = [words[2 * j] * 65536 + words[2 * j + 1] for j in range(n_lanes)]
    assert all(v >= rans.LANE_STATE_LOW for v in x)
    p, out = 2 * n_lanes, [None] * count
    for t in range(max(length)):
        for j in range(n_lanes):
            if t >= length[j]:
                continue
            before = [out[start[j] + t - d] if t - d >= 0 else None for d in (1, 2)]
            ctx = min(sum(classes[s] if s is not None else 0 for s in before), len(cdfs) - 1)
            cdf = cdfs[ctx]
            g = x[j] % (1 << precision)
            i = next(i for i in range(len(cdf) - 1) if cdf[i] <= g < cdf[i + 1])
            x[j] = (x[j] >> precision) * (cdf[i + 1] - cdf[i]) + g - cdf[i]
            out[start[j] + t] = i
        for j in range(n_lanes):
            if t < length[j] and x[j] < rans.LANE_STATE_LOW:
                x[j] = x[j] * 65536 + words[p]
                p += 1
    assert all(v == rans.LANE_STATE_LOW for v in x) and p == len(words)
    return out


def _context_block(rng: np.random.Generator, count: int, n_lanes: int, contexts: int, n: int = 9):
    """Symbols whose magnitudes come in runs (so contexts matter), coded in context lanes."""
    from nnr.codec.rans_encode import encode_context_lanes, lane_contexts

    centre = n // 2
    scale = np.repeat(rng.uniform(0.2, 3.0, size=count // 16 + 1), 16)[:count]
    symbols = np.clip(np.round(rng.laplace(0, scale)), -centre, centre).astype(np.int64) + centre
    classes = np.minimum(np.abs(np.arange(n) - centre), 3)
    ctx = lane_contexts(symbols, classes, contexts, n_lanes)
    precision = int(rng.integers(max(1, (n - 1).bit_length()), 13))
    cdfs = np.stack([rans.lane_cdf(np.bincount(symbols[ctx == c], minlength=n) + 1, precision)
                     for c in range(contexts)])
    words = encode_context_lanes(symbols, cdfs, classes, precision, n_lanes)
    return symbols, rans.LaneBlock(words, rans.LaneTable(cdfs, precision, classes), count, n_lanes), cdfs, classes


def test_context_lanes_decode_as_the_spec_reads_them():
    rng = np.random.default_rng(11)
    for trial in range(60):
        count = int(rng.integers(1, 700))
        lanes = int(rng.integers(1, min(count, 9) + 1))
        contexts = int(rng.integers(2, rans.MAX_CONTEXTS + 1))
        symbols, block, cdfs, classes = _context_block(rng, count, lanes, contexts)
        assert block.contiguous
        reference = _reference_context_decode(block.words.tolist(), cdfs.tolist(), classes.tolist(),
                                              block.table.precision, count, lanes)
        assert reference == symbols.tolist()
        np.testing.assert_array_equal(rans.decode_lane_blocks([block])[0], symbols)


def test_context_lanes_longer_than_one_gathering_piece_come_back_in_order():
    rng = np.random.default_rng(13)
    piece = rans.TILE
    for count, lanes in [(3 * piece + 1, 3), (4 * piece, 4), (2 * piece + 7, 2), (piece + 1, 1), (5 * piece - 3, 5)]:
        symbols, block, _, _ = _context_block(rng, count, lanes, 3)
        np.testing.assert_array_equal(rans.decode_lane_blocks([block])[0], symbols)


def _plain_block(rng: np.random.Generator, n: int, count: int, lanes: int):
    """(symbols, their lane block): ``count`` symbols of an ``n``-symbol random table at a random precision."""
    precision = int(rng.integers(max(1, (n - 1).bit_length()), 17))
    cdf = rans.lane_cdf(_random_table(rng, n, 500), precision)
    symbols = rng.choice(n, size=count, p=np.diff(cdf) / (1 << precision))
    return symbols, rans.LaneBlock(encode_lanes(symbols, cdf, precision, lanes), rans.LaneTable(cdf, precision),
                                   count, lanes)


def _plain_or_context_block(rng: np.random.Generator, context: bool, count: int, lanes: int, fewest: int):
    """(symbols, their lane block): with 2 to 4 context tables, or one table of ``fewest`` to 49 symbols."""
    if context:
        symbols, block, _, _ = _context_block(rng, count, lanes, int(rng.integers(2, 5)))
        return symbols, block
    return _plain_block(rng, int(rng.integers(fewest, 50)), count, lanes)


def test_context_and_plain_blocks_decode_together_in_one_lock_step():
    rng = np.random.default_rng(12)
    blocks, expected = [], []
    for trial in range(30):
        count = int(rng.integers(1, 3000))
        lanes = int(rng.integers(1, min(count, 40) + 1))
        symbols, block = _plain_or_context_block(rng, trial % 2, count, lanes, 2)
        blocks.append(block)
        expected.append(symbols)
    for got, want in zip(rans.decode_lane_blocks(blocks), expected):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(rans.decode_lane_blocks(blocks[::-1]), expected[::-1]):
        np.testing.assert_array_equal(got, want)


def test_symbols_gathered_in_pieces_and_tiles_come_back_in_order(monkeypatch):
    monkeypatch.setattr(rans, "GATHER_ELEMENTS", 24)   # pieces of one to a few steps
    monkeypatch.setattr(rans, "TILE", 5)               # tiles cut through steps and lanes
    rng = np.random.default_rng(17)
    blocks, expected = [], []
    for count, lanes in [(1, 1), (7, 3), (100, 30), (101, 7), (333, 40), (500, 5)]:
        symbols, block, _, _ = _context_block(rng, count, lanes, 3)
        blocks.append(block)
        expected.append(symbols)
        cdf = rans.lane_cdf(_random_table(rng, 20, 500), 9)
        symbols = rng.choice(20, size=count, p=np.diff(cdf) / (1 << 9))
        blocks.append(rans.LaneBlock(encode_lanes(symbols, cdf, 9, lanes), rans.LaneTable(cdf, 9), count, lanes))
        expected.append(symbols)
    for got, want in zip(rans.decode_lane_blocks(blocks), expected):
        np.testing.assert_array_equal(got, want)


def test_a_damaged_block_is_refused_by_the_lock_step_before_any_symbol_is_gathered():
    rng = np.random.default_rng(19)
    symbols, block, _, _ = _context_block(rng, 900, 4, 2)
    gather = rans.lock_step_lane_blocks([block])
    np.testing.assert_array_equal(gather[0](), symbols)
    with pytest.raises(CorruptionError):
        rans.lock_step_lane_blocks([block, block._replace(words=block.words[:-1])])


def test_damaged_context_lanes_are_refused_or_decode_to_other_symbols():
    rng = np.random.default_rng(13)
    symbols, block, _, _ = _context_block(rng, 2000, 5, 4)
    with pytest.raises(CorruptionError):
        rans.decode_lane_blocks([block._replace(words=block.words[:-1])])
    with pytest.raises(CorruptionError):
        rans.decode_lane_blocks([block._replace(words=np.append(block.words, np.uint16(1)))])
    for k in rng.choice(block.words.size, 40, replace=False):
        words = block.words.copy()
        words[k] ^= np.uint16(1 << int(rng.integers(16)))
        try:
            got = rans.decode_lane_blocks([block._replace(words=words)])[0]
        except CorruptionError:
            continue
        assert got.shape == symbols.shape


def test_context_encoder_refuses_what_a_decoder_cannot_read():
    from nnr.codec.rans_encode import encode_context_lanes

    cdfs = np.stack([rans.lane_cdf(np.array([1, 1, 1]), 4)] * 2)
    classes = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="cdfs"):
        encode_context_lanes(np.array([0, 1]), cdfs[:1], classes, 4, 1)
    with pytest.raises(ValueError, match="outside"):
        encode_context_lanes(np.array([0, 3]), cdfs, classes, 4, 1)
    with pytest.raises(ValueError, match="lanes"):
        encode_context_lanes(np.array([0, 1]), cdfs, classes, 4, 3)


def test_context_counts_count_what_lane_contexts_assigns():
    from nnr.codec.rans_encode import context_counts, lane_contexts

    rng = np.random.default_rng(14)
    for _ in range(30):
        n = int(rng.integers(2, 12))
        count = int(rng.integers(1, 3000))
        lanes = int(rng.integers(1, min(count, 50) + 1))
        symbols = rng.integers(0, n, count)
        classes = rng.integers(0, 4, n)
        for contexts in range(2, rans.MAX_CONTEXTS + 1):
            ctx = lane_contexts(symbols, classes, contexts, lanes)
            expected = np.zeros((contexts, n), dtype=np.int64)
            np.add.at(expected, (ctx, symbols), 1)
            np.testing.assert_array_equal(context_counts(symbols, classes, contexts, lanes), expected)


def _outcome(blocks: list, compiled: bool):
    importlib.import_module("nnr.codec.rans_jit")   # registers the compiled lock step

    try:
        return [s.tolist() for s in rans.decode_lane_blocks(blocks, compiled)]
    except CorruptionError as exc:
        return str(exc)


def test_the_compiled_lock_step_decodes_and_refuses_as_the_numpy_one_does():
    """Plain and context blocks, alone and together, intact, cut short, lengthened or with bits
    flipped: the compiled lock step gives the numpy one's symbols or the numpy one's error."""
    rng = np.random.default_rng(23)
    refused = 0
    for trial in range(120):
        blocks = []
        for _ in range(int(rng.integers(1, 5))):
            count = int(rng.integers(1, 2500))
            lanes = int(rng.integers(1, min(count, 40) + 1))
            _, block = _plain_or_context_block(rng, trial % 2, count, lanes, 1)
            words, damage = block.words.copy(), rng.random()
            if damage < 0.3 and words.size > 2 * lanes:
                for i in rng.integers(0, words.size, size=int(rng.integers(1, 4))):
                    words[i] ^= np.uint16(1 << int(rng.integers(16)))
            elif damage < 0.4 and words.size > 4:
                words = words[:-int(rng.integers(1, 4))]
            elif damage < 0.5:
                words = np.append(words, np.uint16(rng.integers(1 << 16)))
            blocks.append(block._replace(words=words))
        want = _outcome(blocks, False)
        assert _outcome(blocks, True) == want, trial
        refused += isinstance(want, str)
    assert 20 < refused < 110   # both intact and refused cases were compared


def test_the_compiled_lock_step_raises_the_first_group_s_error_as_the_numpy_one_does():
    """One long single-lane block and many short many-lane ones make two lock-step groups; the
    numpy lock step raises the first group's error even when the second's comes at an earlier step."""
    rng = np.random.default_rng(31)
    cdf = rans.lane_cdf(_random_table(rng, 16, 400), 12)

    def block(count: int, lanes: int) -> rans.LaneBlock:
        symbols = rng.choice(16, size=count, p=np.diff(cdf) / (1 << 12))
        return rans.LaneBlock(encode_lanes(symbols, cdf, 12, lanes), rans.LaneTable(cdf, 12), count, lanes)

    long_one, wide = block(40_000, 1), [block(60_000, 600) for _ in range(30)]
    blocks = [long_one] + wide
    groups = rans._groups(blocks, [(i, rans._prepare(b)) for i, b in enumerate(blocks)])
    assert len(groups) > 1
    for damaged in ([long_one._replace(words=long_one.words[:-1])] + wide,
                    [long_one._replace(words=np.append(long_one.words, np.uint16(7)))] + wide[:-1]
                    + [wide[-1]._replace(words=wide[-1].words[:-1])]):
        want = _outcome(damaged, False)
        assert isinstance(want, str) and _outcome(damaged, True) == want
    assert _outcome(blocks, True) == _outcome(blocks, False)


def test_the_compiled_lock_step_reads_no_word_a_block_does_not_have(monkeypatch):
    """Blocks whose words stop after the lanes' initial states (the kernel reads one word ahead
    without using it): the numpy lock step's symbols, or its error. The kernel runs as Python
    here, whose indexing refuses a read past the words the compiled code would not notice."""
    rans_jit = importlib.import_module("nnr.codec.rans_jit")
    monkeypatch.setattr(rans_jit, "_decode_block", rans_jit._decode_block.py_func)
    rng = np.random.default_rng(37)
    outcomes = set()
    for trial in range(40):
        count = int(rng.integers(1, 60))
        lanes = int(rng.integers(1, count + 1))
        if trial % 2:
            _, block, _, _ = _context_block(rng, count, lanes, 2)
        else:
            _, block = _plain_block(rng, int(rng.integers(1, 6)), count, lanes)
        bare = block._replace(words=block.words[:2 * lanes])
        want = _outcome([bare], False)
        assert _outcome([bare], True) == want, trial
        outcomes.add(isinstance(want, str))
    assert outcomes == {True, False}   # some decode from their states alone, some run out of words


def test_context_classes_outside_zero_to_three_are_refused():
    cdfs = np.stack([rans.lane_cdf(np.array([1, 1, 1]), 4)] * 2)
    for classes in ([0, 4, 1], [-1, 0, 0], [2 ** 30, 2, 0]):
        with pytest.raises(ValueError, match="class"):
            rans.LaneTable(cdfs, 4, np.array(classes))


def test_compiled_decoders_give_their_results_one_by_one_as_they_are_done():
    finished = []

    def decoder(k: int, blocks: list):
        symbols = yield blocks
        finished.append(k)
        return k, symbols

    rng = np.random.default_rng(29)
    cdf = rans.lane_cdf(_random_table(rng, 12, 300), 10)
    specs = []
    for k in range(4):
        symbols = rng.choice(12, size=500 + k, p=np.diff(cdf) / (1 << 10))
        specs.append((symbols, [rans.LaneBlock(encode_lanes(symbols, cdf, 10, 3), rans.LaneTable(cdf, 10), symbols.size, 3)]))
    importlib.import_module("nnr.codec.rans_jit")   # registers the compiled lock step

    results = rans.start_all([decoder(k, blocks) for k, (_, blocks) in enumerate(specs)], compiled=True)()
    k, symbols = next(results)
    assert k == 0 and finished == [0]   # the others wait for the caller to take this one
    np.testing.assert_array_equal(symbols[0], specs[0][0])
    assert [k for k, _ in results] == [1, 2, 3] and finished == [0, 1, 2, 3]
