"""Service registration that lets chosen methods answer with pre-serialised bytes.

The generated `add_*Servicer_to_server` functions serialise every response
message. A response that many calls share (a live alert sent to a thousand
streams, a company's cached score asked for again and again) is cheaper
serialised once and sent as bytes; the methods named here accept either.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _passthrough(message: Message | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_service(
    server: grpc.aio.Server,
    module: ModuleType,
    service_name: str,
    servicer: object,
    preserialised: frozenset[str] = frozenset(),
) -> None:
    """Register every method of the service `service_name` of the generated
    `module` (a `*_pb2`) on `servicer`, as the generated code would; the
    methods in `preserialised` may also return (or yield) bytes."""
    service: ServiceDescriptor = module.DESCRIPTOR.services_by_name[service_name]
    unknown = preserialised - set(service.methods_by_name)
    if unknown:
        raise ValueError(f"{service.full_name} has no method {sorted(unknown)}")
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for name, method in service.methods_by_name.items():
        response: type[Message] = getattr(module, method.output_type.name)
        serializer: Callable[[Any], bytes] = (
            _passthrough if name in preserialised else response.SerializeToString
        )
        make = _KINDS[(method.client_streaming, method.server_streaming)]
        handlers[name] = make(
            getattr(servicer, name),
            request_deserializer=getattr(module, method.input_type.name).FromString,
            response_serializer=serializer,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
