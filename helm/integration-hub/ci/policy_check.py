"""Checks rendered integration-hub manifests for what a schema cannot see.

Usage: python policy_check.py RENDERED.yaml
Fails (exit 1) with one line per problem. Run by .ci/helm-check with the venv's Python (PyYAML).
"""

import sys

import yaml

SECRET_VARS = (
    "INTEGRATION_HUB_DATABASE_URL",
    "INTEGRATION_HUB_ENCRYPTION_KEYS",
    "INTEGRATION_HUB_JWT_HS256_SECRET",
)


class UniqueKeyLoader(yaml.SafeLoader):
    """A loader that rejects duplicate keys (PyYAML and kubectl would keep only the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def main(path):
    problems = []
    with open(path) as f:
        try:
            docs = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d]
        except yaml.YAMLError as e:
            print(f"FAIL {path}: {e}")
            return 1

    def fail(doc, message):
        problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {message}")

    config = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            config.update(doc.get("data") or {})
    for var in SECRET_VARS:
        if var in config:
            problems.append(f"ConfigMap holds the secret {var}")

    jobs = [d for d in docs if d["kind"] == "Job"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        problems.append(f"expected one Deployment, found {len(deployments)}")

    for doc in deployments + jobs:
        pod = doc["spec"]["template"]["spec"]
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            fail(doc, "pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(doc, "pod seccompProfile is not RuntimeDefault")
        for c in pod["containers"]:
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(doc, f"container {c['name']}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(doc, f"container {c['name']}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                fail(doc, f"container {c['name']}: capabilities do not drop ALL")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        fail(doc, f"container {c['name']}: no resources.{kind}.{r}")
            for e in c.get("env") or []:
                if e["name"] in SECRET_VARS and "secretKeyRef" not in (e.get("valueFrom") or {}):
                    fail(doc, f"container {c['name']}: {e['name']} is not from a secretKeyRef")

    for job in jobs:
        hooks = set((job["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(","))
        if not {"pre-install", "pre-upgrade"} <= hooks:
            fail(job, "not a pre-install,pre-upgrade hook")
        c = job["spec"]["template"]["spec"]["containers"][0]
        if c.get("args") != ["migrate"]:
            fail(job, f"args are {c.get('args')}, not ['migrate']")
        if "INTEGRATION_HUB_DATABASE_URL" not in [e["name"] for e in c.get("env") or []]:
            fail(job, "no INTEGRATION_HUB_DATABASE_URL")

    for doc in deployments:
        pod = doc["spec"]["template"]["spec"]
        c = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
        grpc_port = ports.get("grpc")
        if not str(config.get("INTEGRATION_HUB_LISTEN", "")).endswith(f":{grpc_port}"):
            fail(doc, f"INTEGRATION_HUB_LISTEN {config.get('INTEGRATION_HUB_LISTEN')!r} is not the grpc port {grpc_port}")
        for probe in ("readinessProbe", "livenessProbe"):
            if (c.get(probe) or {}).get("grpc", {}).get("port") != grpc_port:
                fail(doc, f"{probe} is not a gRPC probe on port {grpc_port}")
        sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
        if not sleep:
            fail(doc, "no lifecycle.preStop.sleep (the image has no shell for an exec hook)")
        deadline = int(config.get("INTEGRATION_HUB_SHUTDOWN_DEADLINE_SECS", 20))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= (sleep or 0) + deadline:
            fail(doc, f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + shutdown deadline {deadline}")
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        if jobs and env.get("INTEGRATION_HUB_SKIP_MIGRATIONS") != "true":
            fail(doc, "a migration Job exists but INTEGRATION_HUB_SKIP_MIGRATIONS is not \"true\"")
        if not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts") or []):
            fail(doc, "no writable /tmp")

    for p in problems:
        print(f"FAIL {path}: {p}")
    if not problems:
        print(f"policy checks passed for {len(docs)} resources in {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
