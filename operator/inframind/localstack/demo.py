"""`make demo`: InfraMind end to end on this machine (no cluster, no GPU).

Part 1, control plane: starts the API emulator and the real operator process,
applies the CRDs and the example manifests with kubectl as a user would,
plays kubelet for the vLLM Deployments (nothing runs pods here), then shows
what the operator created, the resources' status, and how a bad spec is
reported. Part 2, data plane (localstack.dataplane): real vLLM CPU engines
as external pools, the gateway, a bounded load through the OpenAI SDK, a
live per-pool table and a summary. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .dataplane import EngineStarter, run_data_plane
from .processes import start_operator, stop_process, wait_for

REPO = Path(__file__).resolve().parents[3]
NAMESPACE = "demo"
MANAGED = ["r1-32b", "mistral-24b", "qwen-coder-14b", "llama-8b", "llama-3b"]


def say(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


class Kubectl:
    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.base = [
            shutil.which("kubectl") or "kubectl",
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(workdir / "kubectl-cache"),
        ]

    def __call__(self, *args: str, show: bool = True, stdin: str | None = None) -> str:
        cmd = [*self.base, *args]
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        if show:
            print(done.stdout.rstrip(), flush=True)
        return done.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "-o", "json", show=False))


def phase_of(kubectl: Kubectl, plural: str, name: str) -> str | None:
    obj = kubectl.json("get", plural, name, "-n", NAMESPACE)
    return (obj.get("status") or {}).get("phase")


def run(workdir: Path, timeout: float, args: argparse.Namespace) -> None:
    from . import run_emulator  # kmock is a dev dependency: import only when the demo runs

    starter = EngineStarter(workdir)
    if not args.control_plane_only:
        # vLLM takes a minute or two to start on CPU: overlap it with part 1.
        starter.start()

    kubeconfig = workdir / "kubeconfig"
    log = workdir / "operator.log"
    say("Local API server (kmock-based emulator on 127.0.0.1) and the operator (kopf)")
    with run_emulator(port=0, kubeconfig_path=kubeconfig) as emu:
        print(f"API emulator at {emu.url}; kubeconfig {kubeconfig}")
        kubectl = Kubectl(kubeconfig, workdir)
        kubectl("apply", "-f", str(REPO / "crds"))
        operator = start_operator(kubeconfig, env={"INFRAMIND_RESYNC_SECONDS": "2"}, log=log)
        print(f"operator running as pid {operator.pid} (log: {log})")
        try:
            kubectl("create", "namespace", NAMESPACE)
            say("Apply the examples: five managed pools, one external pool, two pipelines")
            kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "manifests" / "examples"))

            say("The operator creates a vLLM Deployment + Service per managed pool")
            for pool in MANAGED:
                wait_for(
                    lambda p=pool: kubectl(
                        "get", "deploy", f"vllm-{p}", "-n", NAMESPACE, show=False
                    ),
                    timeout,
                    f"the vLLM Deployment of {pool}",
                )
            kubectl("get", "modelpools", "-n", NAMESPACE)
            dep = kubectl.json("get", "deploy", "vllm-llama-8b", "-n", NAMESPACE)
            vllm_args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
            print("vllm-llama-8b runs: vllm serve " + " ".join(vllm_args))

            say("No kubelet here: the demo reports the vLLM replicas ready, as a cluster would")
            for pool in MANAGED:
                emu.mark_deployment_ready(NAMESPACE, f"vllm-{pool}")
            for pool in MANAGED:
                wait_for(
                    lambda p=pool: phase_of(kubectl, "modelpools", p) == "Ready",
                    timeout,
                    f"{pool} Ready",
                )
            for pipe in ("reasoning", "chat"):
                wait_for(
                    lambda p=pipe: phase_of(kubectl, "agentpipelines", p) == "Ready",
                    timeout,
                    f"{pipe} Ready",
                )
            kubectl("get", "modelpools,agentpipelines", "-n", NAMESPACE)
            kubectl(
                "get",
                "deployments,services,configmaps",
                "-n",
                NAMESPACE,
                "-l",
                "app.kubernetes.io/managed-by=inframind",
            )

            say("The chat pipeline's gateway configuration (ConfigMap, re-read by gateways live)")
            cm = kubectl.json("get", "configmap", "inframind-gw-chat", "-n", NAMESPACE)
            config = json.loads(cm["data"]["pipeline.json"])
            summary = {
                "pools": {p["name"]: p["endpoints"] for p in config["pools"]},
                "topologies": config["topologies"],
                "depths": config["depths"],
                "budget": config["budget"],
                "scheduler": config["scheduler"],
                "policy": config["policy"],
            }
            print(yaml.safe_dump(summary, sort_keys=False).rstrip())

            say("A bad spec: a pipeline naming a pool that does not exist")
            bad = {
                "apiVersion": "inframind.io/v1alpha1",
                "kind": "AgentPipeline",
                "metadata": {"name": "typo"},
                "spec": {"pools": ["llama-70b"], "topologies": ["single"]},
            }
            kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(bad))
            wait_for(
                lambda: phase_of(kubectl, "agentpipelines", "typo") == "Invalid",
                timeout,
                "the condition",
            )
            status = kubectl.json("get", "agentpipeline", "typo", "-n", NAMESPACE)["status"]
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            print(f"Ready={ready['status']} reason={ready['reason']}: {ready['message']}")
            wait_for(
                lambda: "PoolNotFound" in kubectl("get", "events", "-n", NAMESPACE, show=False),
                timeout,
                "the Warning Event",
            )
            kubectl(
                "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=typo"
            )

            say("Scale a pool: the Deployment follows, status reports the missing replicas")
            kubectl(
                "patch",
                "modelpool",
                "llama-8b",
                "-n",
                NAMESPACE,
                "--type",
                "merge",
                "-p",
                '{"spec":{"managed":{"replicas":3}}}',
            )
            wait_for(
                lambda: phase_of(kubectl, "modelpools", "llama-8b") == "Degraded",
                timeout,
                "Degraded",
            )
            kubectl("get", "modelpool", "llama-8b", "-n", NAMESPACE)
            if operator.poll() is not None:
                raise RuntimeError(f"the operator exited; see {log}")
            if not args.control_plane_only:
                run_data_plane(kubectl, NAMESPACE, starter, workdir, args.requests, args.rate, say)
                if operator.poll() is not None:
                    raise RuntimeError(f"the operator exited; see {log}")
        finally:
            stop_process(operator)
            print(f"\noperator (pid {operator.pid}) stopped; API emulator stopping")
            if starter.is_alive() or starter.engines:
                starter.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each step")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--requests", type=int, default=90, help="queries to send (bounded)")
    parser.add_argument("--rate", type=float, default=1.5, help="mean arrivals per second")
    parser.add_argument(
        "--control-plane-only", action="store_true", help="skip the vLLM engines and gateway"
    )
    args = parser.parse_args(argv)
    if not shutil.which("kubectl"):
        print(
            "kubectl is not installed: run `make setup` (it installs Debian's kubectl)",
            file=sys.stderr,
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="inframind-demo-"))
    started = time.monotonic()
    try:
        run(workdir, args.timeout, args)
    except (TimeoutError, RuntimeError) as exc:
        print(f"\ndemo failed: {exc}\noperator log: {workdir / 'operator.log'}", file=sys.stderr)
        return 1
    finally:
        if not args.keep and os.environ.get("INFRAMIND_DEMO_KEEP") is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
