"""The committed stubs say exactly what proto/coherence/v1/*.proto say.

Fails after a .proto change until `python3 clients/python/generate_stubs.py` is run. Compares
the file descriptors (messages, fields, enums, services), which do not depend on the
grpcio-tools version; with the pinned version it also compares the files byte for byte.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import tempfile
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

import generate_stubs

REGENERATE = "stale stubs: run `python3 clients/python/generate_stubs.py`"


def without_json_names(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """`file` without the json_name protoc adds to a descriptor set (the stubs leave it out)."""
    file = descriptor_pb2.FileDescriptorProto.FromString(file.SerializeToString())
    messages = list(file.message_type)
    while messages:
        message = messages.pop()
        for f in message.field:
            f.ClearField("json_name")
        messages.extend(message.nested_type)
    return file


def fresh_descriptors() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.bin"
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        args = ["protoc", f"-I{generate_stubs.PROTO_ROOT}", f"-I{well_known}", f"--descriptor_set_out={out}"]
        assert protoc.main(args + [str(p) for p in generate_stubs.proto_files()]) == 0
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        return {f.name: without_json_names(f) for f in files}


def test_every_proto_file_has_a_module_and_no_module_is_left_over():
    expected = {f"{p.stem}_pb2.py" for p in generate_stubs.proto_files()}
    expected |= {f"{p.stem}_pb2_grpc.py" for p in generate_stubs.proto_files()}
    expected |= {f"{p.stem}_pb2.pyi" for p in generate_stubs.proto_files()}
    expected.add("__init__.py")
    present = {p.name for p in generate_stubs.OUT_DIR.iterdir() if p.is_file()}
    assert present == expected, REGENERATE


def test_the_committed_descriptors_match_the_proto_files():
    fresh = fresh_descriptors()
    for proto in generate_stubs.proto_files():
        module = importlib.import_module(f"coherence_client._generated.{proto.stem}_pb2")
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert committed == fresh[str(proto)], f"{proto}: {REGENERATE}"


def test_with_the_pinned_tools_the_files_are_identical():
    grpc_file = (generate_stubs.OUT_DIR / "coherence_pb2_grpc.py").read_text()
    tools = importlib.metadata.version("grpcio-tools")
    if f"GRPC_GENERATED_VERSION = '{tools}'" not in grpc_file:
        pytest.skip(f"grpcio-tools {tools} is not the version the stubs were generated with")
    with tempfile.TemporaryDirectory() as tmp:
        generate_stubs.generate(Path(tmp))
        for fresh in Path(tmp).iterdir():
            committed = generate_stubs.OUT_DIR / fresh.name
            assert committed.read_text() == fresh.read_text(), f"{fresh.name}: {REGENERATE}"
