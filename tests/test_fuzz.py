"""Fuzz the decoder: mutated vectors, each decoded in a memory- and time-limited child process.

Every input must decode cleanly or be refused with an NnrError (conformance/fuzzing.py lists
the outcomes). NNR_FUZZ_COUNT (default 5000), NNR_FUZZ_SEED (default 0; another seed gives
other inputs), NNR_FUZZ_WORKERS (default 1) and NNR_FUZZ_OUT (default a temporary
directory, for the reproducers) tune the run; tools/fuzz.py runs the same fuzzer for hours.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from conformance.fuzzing import Fuzzer, Pool, Stats, Verdict, is_failure
from conformance.mutations import Sample, assemble, mutate, parse, parse_tens
from nnr.formats.container import COMPACT_SINCE, TENSOR, read_container, read_unit
from nnr.errors import FormatError
from tests.conftest import address_space, fork_allowance

COUNT = int(os.environ.get("NNR_FUZZ_COUNT", "5000"))
SEED = int(os.environ.get("NNR_FUZZ_SEED", "0"))
WORKERS = int(os.environ.get("NNR_FUZZ_WORKERS", "1"))
TIMEOUT = 5.0
"""Seconds per input: a few ms is typical, and a file of at most a few hundred KB has no excuse for more."""

STRUCTURAL = ("tens_body_flip", "tens_body_resize", "tens_body_field", "tens_body_varint", "tens_coding",
              "tens_dtype", "tens_dims", "tens_units", "tens_splice", "tens_snr", "grph_proto_flip",
              "grph_tensor_type", "grph_slots", "grph_external")
"""Mutations that leave META, the header and the unit framing valid."""


@pytest.fixture(scope="module")
def fuzzer() -> Fuzzer:
    return Fuzzer(SEED)


def _failure_report(stats: Stats, seed: int, out: Path) -> str:
    lines = [f"{stats.failures} of {stats.total} fuzz inputs failed (master seed {seed}):", stats.table(), ""]
    for key, c in sorted(stats.classes.items(), key=lambda kv: -kv[1]["count"]):
        ex = c["example"]
        lines.append(f"{c['count']:>6} x {key}  [{'; '.join(stats.triggers(key))}]")
        lines.append(f"         {ex['path'] or 'input ' + str(ex['index'])}: "
                     f"{(ex['detail'].splitlines() or [''])[0][:200]}")
    lines.append(f"\nevery failure: {out / 'failures.jsonl'}; reproduce one in-process: "
                 f"python tools/fuzz.py --reproduce INDEX --seed {seed} --out DIR")
    return "\n".join(lines)


def test_fuzzed_vectors_decode_cleanly_or_are_refused(fuzzer, tmp_path_factory):
    out = Path(os.environ.get("NNR_FUZZ_OUT") or tmp_path_factory.mktemp("fuzz"))
    # workers are forks of this process: a fixed limit would shrink as earlier tests, or more cores, grow it
    stats = fuzzer.run(range(COUNT), out, workers=WORKERS, timeout=TIMEOUT, memory=fork_allowance())
    assert stats.total == COUNT
    if stats.failures:
        pytest.fail(_failure_report(stats, SEED, out), pytrace=False)


def test_a_parsed_vector_reassembles_to_its_own_bytes(fuzzer):
    vectors = [s for s in fuzzer.pool if s.name.startswith("v")]
    assert len(vectors) > 40
    for seed in vectors:
        assert seed.doc is not None, seed.name
        assert assemble(seed.doc) == (seed.data, []), seed.name


def test_structure_mutations_pass_the_crc_index_and_trailer_checks(fuzzer):
    rng = random.Random(SEED)
    vectors = [s for s in fuzzer.pool if s.name.startswith("v")]
    kinds = set()
    for _ in range(300):
        sample = mutate(vectors, rng, only=STRUCTURAL)
        data = memoryview(sample.data)
        kinds.update(m.split(":")[0] for m in sample.mutations)
        try:
            container = read_container(data)
        except FormatError:  # version 5 describes each entry from its graph slot, so a broken graph,
            # a unit whose slot is missing or taken twice, or a graph shape beyond the limits stops the index
            assert struct.unpack_from("<H", data, 4)[0] >= COMPACT_SINCE
            assert any(m.startswith(("grph_", "tens_slot", "tens_units")) or m.endswith("+graph")
                       for m in sample.mutations), sample.mutations
            continue
        compact = container.version >= COMPACT_SINCE
        for entry in container.index:
            _, payload, end = read_unit(data, entry.offset, TENSOR, container.version)
            unit = parse_tens(bytes(payload), compact)
            assert end - entry.offset == entry.length
            assert unit.slot == entry.slot
            assert compact or unit.name.decode() == entry.name
    assert kinds == set(STRUCTURAL)


def test_inputs_are_reproducible_from_seed_and_index(fuzzer):
    again = Fuzzer(SEED)
    firsts = [fuzzer.sample(i) for i in range(50)]
    assert [s.data for s in firsts] == [again.sample(i).data for i in range(50)]
    assert len({s.data for s in firsts}) > 45


def test_violations_name_what_a_reader_must_refuse(fuzzer):
    doc = parse(next(s.data for s in fuzzer.pool if s.name == "v3/quantizer_mulaw.nnr"))
    assert assemble(doc)[1] == []
    doc.version, doc.flags = 1, 1
    doc.units[1].payload += b"\0"
    assert set(assemble(doc)[1]) == {"header_flags", "grph_trailing", "v3_coding_before_v3"}


def _run_targets(target, count: int = 3, **pool_args) -> list[Verdict]:
    """Verdicts of ``target`` on inputs whose data is their index as one byte."""
    verdicts = {}
    pool = Pool(lambda i: Sample(bytes([i]), "t", [], []), target, **pool_args)
    pool.run(range(count), lambda a: verdicts.__setitem__(a.index, a.verdict))
    return [verdicts[i] for i in range(count)]


def _dies_on_one(how):
    def target(sample: Sample, path: str) -> Verdict:
        if sample.data == b"\1":
            how()
        return Verdict("ok")

    return target


@pytest.mark.parametrize("how, outcome", [
    (os.abort, "crash:SIGABRT"),
    (lambda: os.kill(os.getpid(), signal.SIGSEGV), "crash:SIGSEGV"),
    (lambda: os.kill(os.getpid(), signal.SIGKILL), "crash:SIGKILL"),
])
def test_a_dying_worker_is_a_crash_and_a_fresh_one_goes_on(how, outcome):
    assert [v.outcome for v in _run_targets(_dies_on_one(how))] == ["ok", outcome, "ok"]


def test_an_input_that_hangs_is_a_timeout_and_a_fresh_worker_goes_on():
    t0 = time.monotonic()
    verdicts = _run_targets(_dies_on_one(lambda: time.sleep(60)), timeout=1.0)
    assert [v.outcome for v in verdicts] == ["ok", "timeout", "ok"]
    assert time.monotonic() - t0 < 15


@pytest.mark.parametrize("allocate", [lambda: bytearray(2 << 30), lambda: np.ones(1 << 28)])
def test_allocating_beyond_the_memory_limit_is_caught(allocate):
    verdicts = _run_targets(_dies_on_one(allocate), memory=address_space() + (1 << 30))
    assert [v.outcome for v in verdicts] == ["ok", "exception:MemoryError", "ok"]
    assert is_failure(verdicts[1].outcome)


def test_parallel_and_recycled_workers_answer_every_input_once():
    verdicts = _run_targets(lambda s, p: Verdict("ok", detail=str(s.data[0])), count=40, workers=2, recycle=7)
    assert [v.detail for v in verdicts] == [str(i) for i in range(40)]
