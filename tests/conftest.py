from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DCC_DATA = SHARED / "testdata" / "dicompyler-core"


@pytest.fixture
def write():
    """The phantom writer (imported lazily so that collection stays cheap)."""
    from .phantoms import write_phantom

    def _write(tmp_path, shapes, dose, **kw):
        return write_phantom(tmp_path / "plan", shapes, dose, **kw)

    return _write
