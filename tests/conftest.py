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


def skeleton(model) -> bytes:
    """The model serialised with every tensor's data stripped: all that must survive exactly."""
    from conformance.suite import skeleton as strip

    return strip(model)
