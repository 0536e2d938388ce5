"""`inframind operator`: run the kopf operator in this process."""

from __future__ import annotations

import argparse
import logging
import os


def _run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    import kopf

    from ..settings import get_settings
    from . import handlers  # noqa: F401 - registers the handlers with kopf

    settings = get_settings()
    namespaces = args.namespace or settings.namespaces
    # kopf installs the log handler; adding another would print every line twice.
    kopf.configure(verbose=args.verbose)
    logging.getLogger("inframind").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or settings.operator_liveness,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("operator", help="run the operator (kopf) against the current kubeconfig")
    p.add_argument(
        "--namespace", "-n", action="append", help="namespace to watch (repeat); default all"
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then KUBECONFIG)")
    p.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=_run)
