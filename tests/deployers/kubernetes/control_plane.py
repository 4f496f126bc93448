"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and
kube-controller-manager (the binaries of ``scripts/kube-binaries.sh``), each on a free
port of 127.0.0.1, in a data directory of its own, stopped by pid.

The API server enforces authentication (a static token file: an admin token for the tests'
own setup; ServiceAccount tokens for the deployer), ``Node,RBAC`` authorization, admission
and validation; the controller manager runs the controllers that need no node networking:
deployments and replica sets roll for real, the garbage collector removes what an owner
leaves, service accounts get tokens. (Not the endpoint controller: pods here have loopback
addresses, which the API server refuses in Endpoints.)
There is no scheduler and no kubelet: :mod:`.kubelet` plays the one node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ctcd import reaper
from ctcd.stack.processes import free_port

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "scripts" / "kube-binaries.sh"
ADMIN_TOKEN = "ctcd-test-admin-token"
CONTROLLERS = ("deployment", "replicaset", "garbagecollector", "namespace",
               "serviceaccount", "serviceaccount-token")


def binaries() -> Path:
    """The directory of the three binaries; they are built (or taken from the cache) by
    ``make kube-binaries``, which ``make test`` runs first."""
    found = subprocess.run([str(BUILD), "path"], capture_output=True, text=True)
    if found.returncode != 0:
        raise RuntimeError(
            "the Kubernetes control plane for the tests is not built: run `make kube-binaries` "
            "(about 8 minutes once; cached outside the checkout, see scripts/kube-binaries.sh)")
    return Path(found.stdout.strip())


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager; :meth:`start`, then :attr:`url`
    with :data:`ADMIN_TOKEN` (CA: :attr:`ca`)."""

    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bin = binaries()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.certs = self.workdir / "certs"
        self.ca = self.certs / "apiserver.crt"
        self.logs = self.workdir / "logs"
        self.audit_log = self.workdir / "audit.log"
        # etcd's data on tmpfs where there is one: its fsyncs then cost nothing
        shm = Path("/dev/shm")
        self.etcd_dir = Path(tempfile.mkdtemp(prefix="ctcd-etcd-",
                                              dir=shm if shm.is_dir() else None))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> ControlPlane:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._certificates()
        try:
            etcd = self._etcd()
            self._run("kube-apiserver", [
                f"--etcd-servers={etcd}", "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
                "--insecure-port=0", f"--cert-dir={self.certs}",
                f"--tls-cert-file={self.ca}",
                f"--tls-private-key-file={self.certs / 'apiserver.key'}",
                f"--token-auth-file={self.certs / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.certs / 'sa.pub'}",
                f"--service-account-signing-key-file={self.certs / 'sa.key'}",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/16",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={self.ca}",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}", "--audit-log-mode=blocking",
                "--profiling=false", "--v=0",
            ])
            self._wait_ready(timeout)
            kubeconfig = self.kubeconfig(self.workdir / "admin.kubeconfig", ADMIN_TOKEN)
            self._run("kube-controller-manager", [
                f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--port=0",
                "--secure-port=0", f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self.certs / 'sa.key'}",
                f"--root-ca-file={self.ca}", "--concurrent-deployment-syncs=5",
                "--profiling=false", "--v=0",
            ])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        shutil.rmtree(self.etcd_dir, ignore_errors=True)

    def kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig for this API server with ``token`` (YAML is a superset of JSON)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url, "certificate-authority": str(self.ca)}}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return path

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        """An HTTP client of the API server (the admin's by default)."""
        return httpx.Client(base_url=self.url, verify=str(self.ca), timeout=30,
                            headers={"Authorization": f"Bearer {token}"})

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------------

    def _certificates(self) -> None:
        """A self-signed serving certificate for 127.0.0.1 (also the CA clients trust), the
        service-account key pair, and the static token file with the admin token."""
        self.certs.mkdir(parents=True, exist_ok=True)
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl is missing: scripts/system-packages.sh ensure test")
        subprocess.run([
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(self.certs / "apiserver.key"), "-out", str(self.ca),
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes",
        ], check=True, capture_output=True)
        subprocess.run([openssl, "genrsa", "-out", str(self.certs / "sa.key"), "2048"],
                       check=True, capture_output=True)
        subprocess.run([openssl, "rsa", "-in", str(self.certs / "sa.key"), "-pubout",
                        "-out", str(self.certs / "sa.pub")], check=True, capture_output=True)
        (self.certs / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},ctcd-test-admin,ctcd-test-admin,"system:masters"\n')

    def _audit_policy(self) -> Path:
        """The requests of service accounts (the deployer's), with their bodies: what the
        tests check was sent."""
        path = self.workdir / "audit-policy.json"
        path.write_text(json.dumps({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [{"level": "Request", "userGroups": ["system:serviceaccounts"]},
                      {"level": "None"}]}))
        return path

    def _etcd(self) -> str:
        client, peer = free_port(), free_port()
        self._run("etcd", [
            "--name=test", f"--data-dir={self.etcd_dir}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}",
            "--log-level=warn", "--logger=zap",
        ])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{client}/health", timeout=1).status_code == 200:
                    return f"http://127.0.0.1:{client}"
            except httpx.TransportError:
                pass
            self._check_alive("etcd")
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not start:\n{self.log_tail('etcd')}")

    def _run(self, name: str, args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("KUBE")})
        reaper.watch(self.processes[name].pid)  # stopped with the session, even a killed one
        log.close()

    def _check_alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log_tail(name)}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as api:
            while time.monotonic() < deadline:
                self._check_alive("kube-apiserver")
                try:
                    if api.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver was not ready in {timeout:.0f}s:\n"
                           f"{self.log_tail('kube-apiserver')}")

