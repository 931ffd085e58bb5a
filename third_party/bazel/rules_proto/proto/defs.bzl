"""Offline shim: thin forwarders to the native proto rules (Bazel 4)."""

ProtoInfo = ProtoInfo
proto_lang_toolchain = native.proto_lang_toolchain
proto_library = native.proto_library
