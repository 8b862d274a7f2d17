import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EFFNET = ROOT / "conformance" / "models" / "efficientnet_lite0.onnx"
PHOTOS = ROOT / "conformance" / "data" / "imagenet"


@pytest.fixture(scope="session")
def effnet_path() -> Path:
    return EFFNET


def exit_code(main, argv: list[str]) -> int:
    """A CLI's exit status, whether it returns it or argparse raises SystemExit with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def address_space() -> int:
    """Bytes of address space this process (and so a fresh fork of it) already uses."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) << 10 for line in fh if line.startswith("VmSize:"))


def fork_allowance() -> int:
    """An address-space limit for a forked child that decodes: what it inherits (grown by earlier
    tests, and with the core count, by thread stacks and malloc arenas), 3 GiB for the decode,
    and room for each decoding thread's stack and arena."""
    from nnr.threads import available_cores

    return address_space() + (3 << 30) + available_cores() * (80 << 20)


def skeleton(model) -> bytes:
    """The model serialised with every tensor's data stripped: all that must survive exactly."""
    from conformance.suite import skeleton as strip

    return strip(model)
