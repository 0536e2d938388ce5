"""A local control plane for integration tests: the API emulator plus the real operator process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import config

from inframind.localstack import run_emulator
from inframind.localstack.processes import start_operator, stop_process
from support.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = 2


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("control-plane")
    kubeconfig = workdir / "kubeconfig"
    log = workdir / "operator.log"
    with run_emulator(port=0, crds=[ROOT / "crds"], kubeconfig_path=kubeconfig):
        operator = start_operator(
            kubeconfig, env={"INFRAMIND_RESYNC_SECONDS": str(RESYNC_SECONDS)}, log=log
        )
        api = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            yield ControlPlane(kubeconfig, operator, log, api)
        finally:
            api.close()
            stop_process(operator)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    return name
