"""Generates the gRPC stubs of quantd/v1/quantizer.proto with grpcio-tools.

Used by setup.py when the package is built, and by the tests, which build a
copy of the package away from the source tree. The proto is looked up in
`proto/` beside this file (an sdist carries it there) and then in the
repository's `proto/` folder two levels up.

    python build_stubs.py OUT_DIR   # writes OUT_DIR/quantd/v1/quantizer_pb2*.py
"""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO = pathlib.Path("quantd") / "v1" / "quantizer.proto"


def proto_root() -> pathlib.Path:
    """The folder that holds quantd/v1/quantizer.proto."""
    for root in (HERE / "proto", HERE.parent.parent / "proto"):
        if (root / PROTO).is_file():
            return root
    raise FileNotFoundError(
        f"{PROTO} not found in {HERE / 'proto'} or {HERE.parent.parent / 'proto'}")


def generate(out_dir) -> list:
    """Writes quantd/v1/quantizer_pb2.py and quantizer_pb2_grpc.py under
    out_dir; returns their paths."""
    from grpc_tools import protoc
    import grpc_tools

    out_dir = pathlib.Path(out_dir)
    (out_dir / "quantd" / "v1").mkdir(parents=True, exist_ok=True)
    root = proto_root()
    # grpc_tools ships the well-known types (none used today, cheap to allow).
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{root}", f"-I{include}",
                      f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                      str(root / PROTO)])
    if rc != 0:
        raise RuntimeError(f"protoc failed on {root / PROTO} (exit {rc})")
    return [out_dir / "quantd" / "v1" / name
            for name in ("quantizer_pb2.py", "quantizer_pb2_grpc.py")]


if __name__ == "__main__":
    for path in generate(sys.argv[1] if len(sys.argv) > 1 else HERE):
        print(path)
