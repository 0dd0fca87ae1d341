#!/usr/bin/env python3
"""Makes one unary call and prints its error the way grpcurl does: the `google.rpc.Status` of
the `grpc-status-details-bin` trailer as JSON, every detail (ErrorInfo, BadRequest, ...)
decoded with types found through the server's reflection ONLY. (This client's own copies of
the google.rpc types, from googleapis-common-protos, are not used.) So it prints the reason and
the violated fields exactly when the server's reflection serves the google.rpc types.

Usage: error_json.py HOST:PORT package.Service/Method '{"json": "request"}'
The bearer token, if any, comes from the environment variable TOKEN.
Exit codes: 0 an error was printed; 1 the call succeeded; 2 no Status could be decoded.
"""

from __future__ import annotations

import os
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    address, path, body = sys.argv[1:]
    service, method = path.rsplit("/", 1)
    channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    m = pool.FindServiceByName(service).methods_by_name[method]
    request = json_format.Parse(body, message_factory.GetMessageClass(m.input_type)())
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=message_factory.GetMessageClass(m.output_type).FromString,
    )
    token = os.environ.get("TOKEN")
    try:
        call(request, metadata=[("authorization", f"Bearer {token}")] if token else None, timeout=15)
    except grpc.RpcError as err:
        raw = [v for k, v in (err.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
        if not raw:
            print(f"{err.code().name}: {err.details()} (no grpc-status-details-bin)", file=sys.stderr)
            return 2
        try:
            status_type = pool.FindMessageTypeByName("google.rpc.Status")
            status = message_factory.GetMessageClass(status_type).FromString(raw[0])
            # Any details are resolved through the same pool: the server's reflection.
            print(json_format.MessageToJson(status, descriptor_pool=pool, indent=2))
        except Exception as exc:  # a symbol reflection does not serve (grpc.RpcError, KeyError)
            print(f"{err.code().name}: {err.details()}; its details cannot be decoded through "
                  f"reflection: {exc}", file=sys.stderr)
            return 2
        return 0
    finally:
        channel.close()
    print("the call succeeded; expected an error", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
