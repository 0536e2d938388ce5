"""A local stand-in for a Kubernetes API server, for tests and the demo (no cluster needed)."""

from typing import Any

__all__ = [
    "EmulatorHandle",
    "InfraMindEmulator",
    "ResourceType",
    "run_emulator",
    "serve_emulator",
    "write_kubeconfig",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m inframind.localstack.emulator` does not import the module twice.
    if name in __all__:
        from inframind.localstack import emulator

        return getattr(emulator, name)
    raise AttributeError(name)
