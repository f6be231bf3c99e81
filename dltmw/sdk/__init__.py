"""The SDK for programs that embed dltmw: networks, typed clients, the message bus.

Everything a program needs is re-exported by `dltmw` itself (`import dltmw`); see
docs/embedding.md.
"""
