"""reconciler/kube/client.py: API clients from a kubeconfig, and one-line errors instead of tracebacks.

The clusters are tests/kube/standin.py, a stand-in for kube-apiserver (which cannot be installed
here); the clients are the official ones.
"""
from __future__ import annotations

import pytest
from kubernetes import client

from reconciler.kube.client import KubeError, api_client
from tests.kube.standin import KubeStandIn, write_kubeconfig


@pytest.fixture
def clusters(tmp_path):
    with KubeStandIn() as a, KubeStandIn() as b:
        yield a, b, write_kubeconfig(tmp_path / "kubeconfig", {"cluster-a": a, "cluster-b": b})


def test_each_context_reaches_its_cluster(clusters):
    a, b, kubeconfig = clusters
    for context, standin in (("cluster-a", a), ("cluster-b", b), (None, a)):
        client.CoreV1Api(api_client(kubeconfig, context)).list_namespaced_secret("istio-system")
        assert standin.requests[-1].path == "/api/v1/namespaces/istio-system/secrets"
    assert (len(a.requests), len(b.requests)) == (2, 1)


def test_the_default_kubeconfig_is_kubeconfig_from_the_environment(clusters, monkeypatch):
    a, _, kubeconfig = clusters
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    client.CoreV1Api(api_client(None, "cluster-a")).list_namespaced_secret("istio-system")
    assert len(a.requests) == 1


def test_an_unknown_context_names_the_known_ones(clusters):
    _, _, kubeconfig = clusters
    with pytest.raises(KubeError, match=rf"^kubeconfig {kubeconfig} has no context 'cluster-z' "
                                        r"\(known contexts: cluster-a, cluster-b\)$"):
        api_client(kubeconfig, "cluster-z")


def test_a_kubeconfig_without_current_context_needs_one_named(tmp_path):
    with KubeStandIn() as a:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"cluster-a": a})
        kubeconfig.write_text(kubeconfig.read_text().replace("current-context: cluster-a\n", ""))
        with pytest.raises(KubeError, match="sets no current context; name one"):
            api_client(kubeconfig, None)
        assert api_client(kubeconfig, "cluster-a").configuration.host == a.url


@pytest.mark.parametrize("content, says", [
    (None, "no such file"),
    ("clusters: [unclosed", "while parsing"),
    ("just a string", "not a kubeconfig"),
    ("contexts: [{name: x, context: {cluster: nowhere, user: nobody}}]\ncurrent-context: x\n",
     "context 'x': Invalid kube-config file"),
    # no server: the library would try an empty host for ever
    ("clusters: [{name: c, cluster: {insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: t}}]\n"
     "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
     "context 'x': its cluster has no server (the API server's https:// address)"),
])
def test_unusable_kubeconfigs_are_one_line_errors(tmp_path, content, says):
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KubeError) as caught:
        api_client(path, None)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_kubeconfig_that_is_not_yaml_is_reported_without_quoting_it(tmp_path):
    """PyYAML's message quotes the line it stopped at; a kubeconfig's lines hold tokens, and the error
    reaches logs."""
    path = tmp_path / "kubeconfig"
    path.write_text("users:\n- name: u\n  user: {token: s3cr3t-t0ken\n")
    with pytest.raises(KubeError) as caught:
        api_client(path, None)
    assert str(caught.value).startswith(f"kubeconfig {path}: invalid YAML at line 3, column 9: ")  # where the brace opened
    assert "s3cr3t" not in str(caught.value)


def test_without_kubeconfig_outside_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="not running in a cluster"):
        api_client(None, None)


def test_in_cluster_without_a_service_account_token(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(KubeError, match="^in-cluster configuration: "):
        api_client(None, None)  # this machine has no /var/run/secrets/kubernetes.io token
    with pytest.raises(KubeError, match="there is no kubeconfig"):
        api_client(None, "cluster-a")
