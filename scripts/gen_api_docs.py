"""Generate docs/api.md from the comments in proto/creditwatch/v1/*.proto.

Usage: python scripts/gen_api_docs.py [--out FILE]

protoc writes a descriptor set with source info (comments included); this
script renders services, RPCs, messages, fields and enums as Markdown, in file
order. tests/unit/test_packaging.py fails when docs/api.md is stale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from gen_proto import PACKAGE_DIR, PROTO_DIR, _include_dirs  # noqa: E402

# Paths into FileDescriptorProto used by SourceCodeInfo locations.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _METHOD, _VALUE = 2, 3, 2, 2


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    out: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            out[tuple(location.path)] = " ".join(line.strip() for line in text.splitlines())
    return out


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        name = field.type_name.lstrip(".").removeprefix("creditwatch.v1.")
    else:
        name = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)[5:].lower()
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {name}"
    return name


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _message(
    lines: list[str],
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
    prefix: str = "",
) -> None:
    if message.options.map_entry:
        return
    lines += [f"### {prefix}{message.name}", "", comments.get(path, ""), ""]
    if message.field:
        lines += ["| field | type | description |", "|---|---|---|"]
        for i, field in enumerate(message.field):
            description = comments.get((*path, _FIELD, i), "")
            lines.append(f"| `{field.name}` | `{_type_name(field)}` | {_cell(description)} |")
        lines.append("")
    for i, nested in enumerate(message.nested_type):
        _message(lines, nested, (*path, _NESTED, i), comments, f"{prefix}{message.name}.")


def render(files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    """The Markdown page for the given descriptors."""
    lines = [
        "# creditwatch.v1 API reference",
        "",
        "Generated from the comments in `proto/creditwatch/v1` by "
        "`scripts/gen_api_docs.py`; do not edit by hand. Conventions (authentication, "
        "paging, errors) are in [api-conventions.md](api-conventions.md).",
        "",
    ]
    for file in files:
        comments = _comments(file)
        lines += [f"## {file.name}", ""]
        for s, service in enumerate(file.service):
            lines += [f"### service {service.name}", "", comments.get((_SERVICE, s), ""), ""]
            lines += ["| RPC | request → response | description |", "|---|---|---|"]
            for m, method in enumerate(service.method):
                streams = (
                    ("stream " if method.client_streaming else "")
                    + method.input_type.rsplit(".", 1)[-1]
                    + " → "
                    + ("stream " if method.server_streaming else "")
                    + method.output_type.rsplit(".", 1)[-1]
                )
                description = comments.get((_SERVICE, s, _METHOD, m), "")
                lines.append(f"| `{method.name}` | `{streams}` | {_cell(description)} |")
            lines.append("")
        for m, message in enumerate(file.message_type):
            _message(lines, message, (_MESSAGE, m), comments)
        for e, enum in enumerate(file.enum_type):
            lines += [f"### enum {enum.name}", "", comments.get((_ENUM, e), ""), ""]
            lines += ["| value | number | description |", "|---|---|---|"]
            for v, value in enumerate(enum.value):
                description = comments.get((_ENUM, e, _VALUE, v), "")
                lines.append(f"| `{value.name}` | {value.number} | {_cell(description)} |")
            lines.append("")
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def descriptors() -> list[descriptor_pb2.FileDescriptorProto]:
    """Descriptors with comments of our own proto files, in name order."""
    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / PACKAGE_DIR).glob("*.proto")
    )
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.pb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                *(f"-I{d}" for d in _include_dirs()),
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *protos,
            ],
            check=True,
        )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return sorted(files, key=lambda f: f.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "api.md")
    args = parser.parse_args()
    args.out.write_text(render(descriptors()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
