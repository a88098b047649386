"""Generate the Python protobuf/gRPC code for creditwatch.v1 from proto/.

Usage: python scripts/gen_proto.py [--out DIR]

Writes `DIR/creditwatch/v1/*_pb2.py`, `*_pb2_grpc.py` and their typed stubs
(`.pyi`, by mypy-protobuf) (default DIR: clients/). The output depends only on the .proto
files and the pinned grpcio-tools / mypy-protobuf versions, so
tests/unit/test_generated_code.py can regenerate into a temporary folder and
fail when the committed code has drifted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_DIR = Path("creditwatch") / "v1"
INIT_TEXT = '"""Generated protobuf and gRPC code for the creditwatch.v1 API (do not edit)."""\n'


def _include_dirs() -> list[str]:
    grpc_tools_protos = resources.files("grpc_tools") / "_proto"
    # googleapis-common-protos installs google/type/*.proto and google/rpc/*.proto
    # next to its generated modules.
    import google.type.money_pb2 as money

    googleapis_root = Path(money.__file__).resolve().parent.parent.parent
    return [str(PROTO_DIR), str(grpc_tools_protos), str(googleapis_root)]


def generate(out_dir: Path) -> list[Path]:
    """Generate the code into `out_dir` and return the files written."""
    from grpc_tools import protoc

    target = out_dir / PACKAGE_DIR
    if target.exists():
        for old in target.glob("*_pb2*.py*"):
            old.unlink()
    target.mkdir(parents=True, exist_ok=True)
    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / PACKAGE_DIR).glob("*.proto")
    )
    args = [
        "grpc_tools.protoc",
        *(f"-I{d}" for d in _include_dirs()),
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ]
    # mypy-protobuf's stubs type enum fields as `Enum.ValueType`, which servers
    # can build from ints (`RiskClass.ValueType(3)`), unlike protoc's --pyi_out.
    for name in ("mypy", "mypy_grpc"):
        plugin = shutil.which(f"protoc-gen-{name}", path=str(Path(sys.executable).parent))
        if plugin is None:
            raise SystemExit(f"protoc-gen-{name} not found: pip install -e '.[dev]'")
        args += [f"--plugin=protoc-gen-{name}={plugin}", f"--{name}_out={out_dir}"]
    code = protoc.main([*args, *protos])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    (target / "__init__.py").write_text(INIT_TEXT)
    (target / "py.typed").write_text("")
    return sorted(target.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "clients")
    args = parser.parse_args()
    files = generate(args.out)
    print(f"generated {len(files)} files in {args.out / PACKAGE_DIR}")


if __name__ == "__main__":
    main()
