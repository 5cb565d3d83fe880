"""Build hooks: the gRPC stubs are generated from the repository's proto
when the package is built (never committed), and an sdist carries the proto
so that it builds anywhere. The metadata is in pyproject.toml."""
import os
import pathlib
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_stubs  # noqa: E402


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        if not self.dry_run:
            build_stubs.generate(self.build_lib)
            if getattr(self, "editable_mode", False):
                # An editable install imports from the source tree.
                build_stubs.generate(build_stubs.HERE)

    def get_outputs(self, include_bytecode=True):
        generated = [os.path.join(self.build_lib, "quantd", "v1", name)
                     for name in ("quantizer_pb2.py", "quantizer_pb2_grpc.py")]
        return super().get_outputs(include_bytecode) + generated


class SdistWithProto(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        src = build_stubs.proto_root() / build_stubs.PROTO
        dst = pathlib.Path(base_dir) / "proto" / build_stubs.PROTO
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProto})
