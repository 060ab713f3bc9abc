"""Objectives, one file each. ``registry()`` maps a method name to its class and config schema."""

from ssl_bench.methods.base import Context, Method, build_method, register, registry

__all__ = ["Context", "Method", "build_method", "register", "registry"]
