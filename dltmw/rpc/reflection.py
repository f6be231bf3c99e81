"""Server reflection on both protocols: `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

Why both. Generic tools ask for one or the other: grpcurl ≥ 1.9, Postman and newer grpc
libraries ask `grpc.reflection.v1` first, older ones only `v1alpha`. grpcio-reflection (1.85)
ships only v1alpha. The two protocols are the same messages under two package names (field
numbers and names are identical; v1 was a rename), so a message's bytes mean the same under
either. This module therefore:

1. adds the v1 file (`grpc/reflection/v1/reflection.proto`) to the default descriptor pool, built
   from the v1alpha file by renaming its package — so v1 can itself be reflected and the request
   boundary (`rpc/boundary.py`), which parses every request with the class of its method's
   descriptor, parses v1 requests as v1 messages;
2. serves v1 with the very v1alpha servicer: each v1 request is re-read as v1alpha (same bytes),
   and each v1alpha answer is sent as is (same bytes on the wire).

`reflectors(names)` returns both services with the servicers that list exactly `names` plus the
two reflection services themselves: a node lists only what it registers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

V1ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
SERVICE = "ServerReflection"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection file: the v1alpha file with its package (and type references) renamed."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = V1
    old, new = f".{V1ALPHA}.", f".{V1}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    proto.options.Clear()  # v1alpha's language options name v1alpha packages
    return proto


def _v1_service() -> ServiceDescriptor:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.Add(_v1_file())
    found: ServiceDescriptor = pool.FindServiceByName(f"{V1}.{SERVICE}")
    return found


V1ALPHA_SERVICE: ServiceDescriptor = reflection_pb2.DESCRIPTOR.services_by_name[SERVICE]
V1_SERVICE = _v1_service()
SERVICE_NAMES = (V1_SERVICE.full_name, V1ALPHA_SERVICE.full_name)


class V1ReflectionServicer:
    """`grpc.reflection.v1.ServerReflection` answered by the v1alpha servicer (same bytes)."""

    def __init__(self, inner: ReflectionServicer) -> None:
        self._inner = inner

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[object], context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[object]:
        """Re-read each v1 request as v1alpha and pass the v1alpha answers on unchanged."""

        async def as_v1alpha() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            async for request in requests:
                raw = request.SerializeToString()  # type: ignore[attr-defined]
                yield reflection_pb2.ServerReflectionRequest.FromString(raw)

        async for response in self._inner.ServerReflectionInfo(as_v1alpha(), context):
            yield response


def reflectors(names: Iterable[str]) -> list[tuple[ServiceDescriptor, object]]:
    """Both reflection services, listing exactly `names` and themselves."""
    inner = ReflectionServicer([*names, *SERVICE_NAMES])
    return [(V1_SERVICE, V1ReflectionServicer(inner)), (V1ALPHA_SERVICE, inner)]
