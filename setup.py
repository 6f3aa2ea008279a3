"""Build of the optional compiled core (`zeekndm._core`, Rust via PyO3, crate in native/).

Everything else is declared in pyproject.toml. The extension is optional: where no Rust
toolchain (cargo) is found, or its build fails, the package installs and runs in pure
Python with the same results, and says so here (visible with `pip install -v .`) and in
`zeekndm --version`. `ZEEKNDM_BUILD_CORE=0` skips the build on purpose.
"""

import os
import shutil
import sys

from setuptools import setup

rust_extensions = []
why = None
if os.environ.get("ZEEKNDM_BUILD_CORE", "1") == "0":
    why = "ZEEKNDM_BUILD_CORE=0"
elif shutil.which(os.environ.get("CARGO", "cargo")) is None:
    why = "no Rust toolchain: cargo is not on PATH"
else:
    try:
        from setuptools_rust import Binding, RustExtension
    except ImportError:
        why = "setuptools-rust is not installed"
    else:
        rust_extensions.append(
            RustExtension(
                "zeekndm._core",
                path="native/Cargo.toml",
                binding=Binding.PyO3,
                optional=True,  # a failed build falls back to pure Python
                py_limited_api=True,
                debug=False,  # editable installs too: a debug build is ~15x slower
            )
        )
if why:
    sys.stderr.write(
        f"zeekndm: not building the compiled core ({why}); installing the pure-Python "
        "core, which gives the same results more slowly\n"
    )

setup(rust_extensions=rust_extensions)
