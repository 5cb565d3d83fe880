"""The wire contract quantd.v1: quantizer_pb2 and quantizer_pb2_grpc are
generated from proto/quantd/v1/quantizer.proto when the package is built."""
