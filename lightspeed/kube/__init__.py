"""A small async client of the Kubernetes API: the few calls lightspeed makes.

* ``TokenReview`` (who does this bearer token belong to),
* ``SubjectAccessReview`` on a non-resource path (may this user ``get`` ``/ls-access``),
* the OpenShift ``ClusterVersion`` named ``version`` (the cluster id),
* one ``Secret`` (the pull secret ``openshift-config/pull-secret``).

Credentials come from, in this order of preference, what the caller names explicitly
(server URL, CA file, token), the pod's service account (``KUBERNETES_SERVICE_HOST`` /
``KUBERNETES_SERVICE_PORT`` and ``/var/run/secrets/kubernetes.io/serviceaccount/``), or a
kubeconfig (``$KUBECONFIG``, else ``~/.kube/config``; its current context: bearer token,
client certificate, CA data or file). See :meth:`KubeCredentials.discover`.

Every failure is one of three exceptions, so callers can answer the right status:

* :class:`KubeUnavailable`: the API could not be reached, timed out, or answered 5xx/429;
  worth retrying later (an HTTP service answers 503);
* :class:`KubeRejected`: the API refused *our* credentials (401) or permissions (403);
  a configuration problem, not the caller's;
* :class:`KubeNotFound`: the object does not exist (404).

All derive from :class:`KubeError`. Messages never carry a token, and never the API's own
response text (which may echo request data); the status code and the ``reason`` field of a
Kubernetes ``Status`` object (a fixed CamelCase word such as ``NotFound``) are kept.

``client.py`` is the client, ``credentials.py`` the credentials and the TLS context they make,
``errors.py`` the exceptions; import the names from here.
"""

from lightspeed.kube.client import KubeClient, KubeUser, TokenReviewResult
from lightspeed.kube.credentials import DEFAULT_SERVICE_ACCOUNT_DIR, KubeCredentials
from lightspeed.kube.errors import KubeConfigError, KubeError, KubeNotFound, KubeRejected, KubeUnavailable

__all__ = [
    "DEFAULT_SERVICE_ACCOUNT_DIR",
    "KubeClient",
    "KubeConfigError",
    "KubeCredentials",
    "KubeError",
    "KubeNotFound",
    "KubeRejected",
    "KubeUnavailable",
    "KubeUser",
    "TokenReviewResult",
]
