"""Generated protobuf and gRPC code for the creditwatch.v1 API (do not edit)."""
