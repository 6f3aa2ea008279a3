"""Which core reads the records: the compiled one when it was built, else pure Python.

`zeekndm._core` (Rust, PyO3; the crate is in `native/`) is built by `pip install .`
where a Rust toolchain exists, and is optional: without it everything runs in pure
Python with the same results. `ZEEKNDM_CORE=python` forces the pure-Python path (the
tests run both); `ZEEKNDM_CORE=native` makes a missing compiled core an error instead
of a fallback (CI uses it, so a build that silently failed cannot pass).

The readers look at `native` each time they open a file, so tests can switch it.
"""

from __future__ import annotations

import os
from types import ModuleType

from zeekndm.errors import ZeekNDMError

ENV = "ZEEKNDM_CORE"


def _load() -> tuple[ModuleType | None, str]:
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted == "python":
        return None, f"pure Python (forced by {ENV}=python)"
    try:
        from zeekndm import _core
    except ImportError as exc:
        if wanted == "native":
            raise ZeekNDMError(
                f"{ENV}=native but the compiled core is not available ({exc}); "
                "reinstall with a Rust toolchain (cargo) on PATH"
            ) from None
        return None, "pure Python (the compiled core was not built: no Rust toolchain at install)"
    return _core, f"compiled (Rust, zeekndm._core {_core.__version__})"


#: The compiled module, or None on the pure-Python path.
native, description = _load()


def describe() -> str:
    """One phrase for `zeekndm --version`: which core is in use, and why."""
    return description
