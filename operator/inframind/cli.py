"""The `inframind` command: one entry point, one subcommand per component.

Each subcommand lives with its component and exposes `register(subparsers)`;
this module only wires them up and imports each lazily, so that
`inframind crds` does not pay for numpy and `inframind operator` does not pay
for matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module exposing `register(subparsers) -> None`; the parser it
# adds sets `func(args) -> int`.
COMMANDS: dict[str, str] = {
    "crds": "inframind.api.crdgen",
    "operator": "inframind.controller.cli",
    "gateway": "inframind.gateway.cli",
    "sim": "inframind.sim.cli",
    "bench": "inframind.bench.cli",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inframind",
        description="Infrastructure-aware orchestration of multi-agent LLM pipelines.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, module in COMMANDS.items():
        if wanted is not None and name != wanted:
            # Only the chosen command's module is imported; the others get a
            # placeholder so that `--help` still lists them.
            sub.add_parser(name, help=f"(see `inframind {name} --help`)")
            continue
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if wanted is not None:
                raise
            sub.add_parser(name, help=f"unavailable: {exc}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
