"""Builds, whenever the package is built or installed (pip install ., pip install -e .):

- the status API's Python code from proto/ with grpcio-tools (the generated files are not kept in Git);
- the compiler's hot modules as C extensions with mypyc (compiler/native.py lists them and says why),
  unless GALLEON_PURE_PYTHON=1. Without a C compiler the build says so and installs pure Python.

Everything else about the package is in pyproject.toml.
"""
import json
import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = "proto/galleon/v1"
# The proto is compiled as if it lived at reconciler/api/, so the generated gRPC module imports
# `reconciler.api.reconciler_pb2`; its package (the service's name, galleon.v1.Reconciler) is unchanged.
PACKAGE_DIR = "reconciler/api"


def generate() -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{PACKAGE_DIR}={PROTO_DIR}", f"-I{include}", "--python_out=.",
            "--grpc_python_out=.", f"{PACKAGE_DIR}/reconciler.proto"]
    if protoc.main(args) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {PROTO_DIR}/reconciler.proto")


class BuildWithProtos(build_py):
    def run(self) -> None:
        generate()
        super().run()


class OptionalBuildExt(build_ext):
    """The extensions only make the compiler faster: a failed C build leaves the pure-Python package.
    mypyc's shared library is built first, so once one extension fails the others are not tried."""

    failed: Exception | None = None

    def build_extension(self, ext) -> None:
        if self.failed is not None:
            return
        try:
            super().build_extension(ext)
        except Exception as error:  # setuptools raises several types for a missing compiler or headers
            self.failed = error
            detail = str(error)
            print(f"galleon: building the compiled compiler modules failed ({type(error).__name__}: "
                  f"{detail[:200]}{'...' if len(detail) > 200 else ''}); installing the pure-Python package, "
                  f"which compiles about 1.5 times slower. Install gcc and the Python headers to build them.",
                  file=sys.stderr)

    def get_output_mapping(self) -> dict[str, str]:
        # An editable install copies each built file into the tree: only those that were built.
        mapping = super().get_output_mapping()
        return mapping if self.failed is None else {k: v for k, v in mapping.items() if os.path.exists(v)}

    def copy_extensions_to_source(self) -> None:
        if self.failed is None:
            super().copy_extensions_to_source()


def native_extensions() -> list:
    if os.environ.get("GALLEON_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify

    native = runpy.run_path(str(ROOT / "compiler" / "native.py"))
    # Recorded before the build: compiler/native.py refuses extensions built from other sources.
    (ROOT / "compiler" / native["RECORD"]).write_text(json.dumps(native["source_hashes"](ROOT / "compiler"),
                                                                 indent=2, sort_keys=True) + "\n")
    return mypycify([str(native["source_path"](m, Path("compiler"))) for m in native["NATIVE"]],
                    group_name="compiler", opt_level="3")


setup(cmdclass={"build_py": BuildWithProtos, "build_ext": OptionalBuildExt}, ext_modules=native_extensions())
