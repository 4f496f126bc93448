"""The cluster the tests run against: the fake (default) or a real one
(``CTCD_K8S_TEST_CLUSTER=1``: the current kubeconfig context, optionally
``CTCD_K8S_TEST_CONTEXT``)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

REAL = os.environ.get("CTCD_K8S_TEST_CLUSTER") == "1"
fake_only = pytest.mark.skipif(REAL, reason="needs the fake API server's fault injection")


class RealCluster:
    """The parts of :class:`FakeCluster` the tests read, over a real cluster's API."""

    def __init__(self) -> None:
        from kubernetes import client, config

        config.load_kube_config(context=os.environ.get("CTCD_K8S_TEST_CONTEXT"))
        self.api = client.ApiClient()
        self.namespace = f"ctcd-test-{uuid.uuid4().hex[:6]}"
        self.namespaces = {self.namespace}
        client.CoreV1Api(self.api).create_namespace({"metadata": {"name": self.namespace}})

    def get(self, plural: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
        path = {"deployments": f"/apis/apps/v1/namespaces/{{ns}}/deployments/{name}",
                "inferenceservices": "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/"
                                     f"inferenceservices/{name}"}.get(
            plural, f"/api/v1/namespaces/{{ns}}/{plural}/{name}")
        try:
            response = self.api.call_api(path.format(ns=ns or self.namespace), "GET",
                                         auth_settings=["BearerToken"], _preload_content=False,
                                         response_type="object")
        except Exception as err:  # the real client raises ApiException(404)
            if getattr(err, "status", None) == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(response[0].data)
        return data

    def items(self, plural: str, ns: str | None = None) -> list[dict[str, Any]]:
        path = (f"/apis/apps/v1/namespaces/{ns or self.namespace}/deployments"
                if plural == "deployments" else
                f"/api/v1/namespaces/{ns or self.namespace}/{plural}")
        response = self.api.call_api(path, "GET", auth_settings=["BearerToken"],
                                     _preload_content=False, response_type="object")
        return list(json.loads(response[0].data)["items"])

    def stop(self) -> None:
        from kubernetes import client

        client.CoreV1Api(self.api).delete_namespace(self.namespace)


