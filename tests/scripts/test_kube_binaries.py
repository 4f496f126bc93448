"""``scripts/kube-binaries.sh``: the control plane the Kubernetes tests run against, taken
from its cache (``make test`` builds it first), is the pinned Debian build."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kube-binaries.sh"


def test_the_cached_binaries_are_the_pinned_versions_and_ensure_reuses_them() -> None:
    started = time.monotonic()
    ensured = subprocess.run([str(SCRIPT), "ensure"], capture_output=True, text=True,
                             check=True, timeout=60)
    assert time.monotonic() - started < 30, "ensure rebuilt what the cache holds"
    path = subprocess.run([str(SCRIPT), "path"], capture_output=True, text=True, check=True)
    directory = Path(path.stdout.strip())
    assert ensured.stdout.strip() == str(directory)
    text = SCRIPT.read_text()
    [kubernetes] = re.findall(r"^KUBERNETES_SOURCE=(\S+)", text, re.MULTILINE)
    [etcd] = re.findall(r"^ETCD_PACKAGE=(\S+)", text, re.MULTILINE)
    assert kubernetes in directory.name and etcd in directory.name  # keyed on both
    upstream = kubernetes.split("really")[1].split("-")[0]  # 1.20.2
    for binary in ("kube-apiserver", "kube-controller-manager"):
        answer = subprocess.run([str(directory / binary), "--version"], capture_output=True,
                                text=True, check=True)
        assert answer.stdout.strip() == f"Kubernetes v{upstream}"
    answer = subprocess.run([str(directory / "etcd"), "--version"], capture_output=True,
                            text=True, check=True)
    assert f"etcd Version: {etcd.split('-')[0]}" in answer.stdout


def test_path_fails_clearly_without_a_cache(tmp_path: Path) -> None:
    answer = subprocess.run([str(SCRIPT), "path"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "CTCD_KUBE_CACHE": str(tmp_path)})
    assert answer.returncode == 1 and answer.stdout == ""
