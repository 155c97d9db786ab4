#!/usr/bin/env bash
# Validates deploy/ offline (no cluster, no network), as .ci/run does:
#   1. yamllint on every manifest;
#   2. the Kustomize base renders (kubectl kustomize, when kubectl is installed) and every
#      built-in resource validates strictly against the Kubernetes OpenAPI schemas shipped in
#      the kubernetes-validate package, for the oldest version with native sidecars on by
#      default (1.29) and the newest it knows;
#   3. the custom resources: the PodMonitor scrapes a port the sidecar declares, and the
#      PrometheusRule's groups pass `promtool check rules`;
#   4. the Grafana dashboard is JSON with unique panel ids, and the ACL rules shipped in the
#      Redis Secrets (base: eval mode; overlays/redis-functions: functions mode and its loader)
#      are the ones docs/security.md documents;
#   5. every overlay (kubernetes/overlays/*) renders and validates like the base, and one that
#      moves gRPC to a Unix socket has the app dial that socket in a volume both containers
#      mount (needs kubectl; without it the overlays are skipped, and the script says so).
# Which metrics the dashboard and alerts use is checked against a live scrape by
# `cargo test -p coherence-sidecar --test deploy_metrics`. The Dockerfile cannot be built here
# (no container engine); see docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "deploy/validate.sh: '$1' is missing: $2" >&2; exit 1; }
}
need yamllint "apt-get install yamllint"
need kubernetes-validate "pip install kubernetes-validate"
need promtool "apt-get install prometheus"
need python3 "install Python 3"
python3 -c 'import yaml' 2>/dev/null || { echo "deploy/validate.sh: python3 lacks PyYAML (pip install kubernetes-validate brings it)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=kubernetes/base

echo "== yamllint"
yamllint --strict -c .yamllint.yaml kubernetes

echo "== kustomize build"
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize "$base" > "$work/rendered.yaml"
  echo "rendered $(grep -c '^kind:' "$work/rendered.yaml") resources with kubectl kustomize"
  manifests=("$work/rendered.yaml")
else
  echo "kubectl not installed: validating the base's files one by one instead of the rendered build"
  manifests=()
  for f in $(python3 -c 'import yaml,sys; print(" ".join(yaml.safe_load(open(sys.argv[1]))["resources"]))' "$base/kustomization.yaml"); do
    manifests+=("$base/$f")
  done
fi

# kubernetes-validate knows built-in kinds only; the monitoring.coreos.com kinds are checked below.
python3 - "$work/builtin.yaml" "$work/crds.yaml" "${manifests[@]}" <<'PY'
import sys, yaml
builtin, crds = [], []
for path in sys.argv[3:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            (crds if doc["apiVersion"].startswith("monitoring.coreos.com/") else builtin).append(doc)
yaml.safe_dump_all(builtin, open(sys.argv[1], "w"))
yaml.safe_dump_all(crds, open(sys.argv[2], "w"))
print(f"{len(builtin)} built-in resources, {len(crds)} Prometheus Operator resources")
PY

for version in 1.29.0 1.37.0; do
  echo "== kubernetes-validate --strict (Kubernetes $version)"
  kubernetes-validate --strict --quiet -k "$version" "$work/builtin.yaml"
  echo "ok"
done

echo "== PodMonitor and PrometheusRule"
python3 - "$work/crds.yaml" "$work/builtin.yaml" "$work/rules.yaml" <<'PY'
import sys, yaml
crds = list(yaml.safe_load_all(open(sys.argv[1])))
builtin = list(yaml.safe_load_all(open(sys.argv[2])))
ports = set()
for doc in builtin:
    if doc["kind"] == "Deployment":
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            ports |= {p["name"] for p in c.get("ports", []) if "name" in p}
kinds = {doc["kind"]: doc for doc in crds}
assert set(kinds) == {"PodMonitor", "PrometheusRule"}, f"unexpected custom resources: {sorted(kinds)}"
for ep in kinds["PodMonitor"]["spec"]["podMetricsEndpoints"]:
    assert ep["port"] in ports, f"PodMonitor scrapes port {ep['port']!r}, which no container declares ({sorted(ports)})"
    assert ep.get("path", "/metrics") == "/metrics", ep
yaml.safe_dump({"groups": kinds["PrometheusRule"]["spec"]["groups"]}, open(sys.argv[3], "w"))
print(f"PodMonitor scrapes declared port(s) {[ep['port'] for ep in kinds['PodMonitor']['spec']['podMetricsEndpoints']]}")
PY
promtool check rules "$work/rules.yaml"

echo "== Grafana dashboard"
python3 - grafana/coherence-dashboard.json <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
ids = [p["id"] for p in dash["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard queries nothing"
print(f"{len(dash['panels'])} panels, {len(exprs)} queries")
PY

echo "== ACL rules shipped = ACL rules documented"
# same_rule FILE USER WHICH: USER's line in FILE is the WHICH (head: first, tail: last) line for
# USER in docs/security.md. The example password differs from the placeholder in the docs; the
# rest must be identical.
same_rule() {
  local shipped documented
  shipped=$(grep -o "user $2 .*" "$1" | sed 's/ >[^ ]*//')
  documented=$(grep -o "user $2 .*" ../docs/security.md | "$3" -n 1 | sed 's/ >[^ ]*//')
  if [ "$shipped" != "$documented" ]; then
    echo "$1 and docs/security.md disagree on the ACL rule of $2:" >&2
    echo "  deploy: $shipped" >&2
    echo "  docs:   $documented" >&2
    exit 1
  fi
}
same_rule "$base/redis-credentials.yaml" coherence-app head
# The functions rule (overlay redis-functions): the sidecar's user and the library's loader.
same_rule kubernetes/overlays/redis-functions/redis-credentials.yaml coherence-app tail
same_rule kubernetes/overlays/redis-functions/redis-credentials.yaml coherence-functions-loader tail
echo "ok"
echo "== overlays"
for overlay in kubernetes/overlays/*/; do
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl not installed: overlay $overlay not rendered or validated"
    continue
  fi
  kubectl kustomize "$overlay" > "$work/overlay.yaml"
  python3 - "$work/overlay.yaml" "$work/overlay-builtin.yaml" <<'PY'
import posixpath, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")], open(sys.argv[2], "w"))
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "coherence-config")
listen = config["data"]["COHERENCE_LISTEN"]
if listen.startswith("unix://"):
    socket_dir = posixpath.dirname(listen[len("unix://"):])
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "coherence")
    app = next(c for c in pod["containers"] if c["name"] == "app")
    addr = {e["name"]: e.get("value") for e in app.get("env", [])}.get("COHERENCE_ADDR")
    assert addr == listen, f"the app dials {addr!r}, the sidecar listens on {listen!r}"
    mounted = lambda c: {m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == socket_dir}
    shared = mounted(sidecar) & mounted(app)
    assert shared, f"no volume mounted at {socket_dir} in both containers"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[n] for n in shared), "the socket volume is not an emptyDir"
    assert pod.get("securityContext", {}).get("fsGroup") is not None, "no fsGroup: the app cannot open a 0660 socket"
    print(f"{sys.argv[1]}: app and sidecar share {listen} in an emptyDir")
if config["data"].get("COHERENCE_REDIS_SCRIPTS") == "functions":
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["initContainers"]]
    loader = pod["initContainers"][0]
    assert loader.get("args") == ["functions", "load"] and "restartPolicy" not in loader, f"the first init container does not load the functions library: {loader}"
    assert names.index(loader["name"]) < names.index("coherence"), names
    print(f"{sys.argv[1]}: {loader['name']} loads the functions library before the sidecar starts")
PY
  for version in 1.29.0 1.37.0; do
    kubernetes-validate --strict --quiet -k "$version" "$work/overlay-builtin.yaml"
  done
  echo "$overlay: ok"
done
echo "deploy/ is valid"
