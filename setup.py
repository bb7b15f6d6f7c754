"""Builds the status API's Python code from proto/ with grpcio-tools whenever the package is built
or installed (pip install ., pip install -e .); the generated files are not kept in Git.

Everything else about the package is in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
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


setup(cmdclass={"build_py": BuildWithProtos})
