#!/usr/bin/env bash
# End to end on a real Kubernetes cluster (kind): builds the two images, loads them
# into a new kind cluster, installs deploy/ and deploy/etcd/, creates the example
# PgHaCluster, runs a writer inside the cluster against the demo-rw Service, deletes
# the primary's pod, and reports the time from the deletion to the first
# acknowledged write after it and how many acknowledged writes are missing.
#
# Not run in CI (no container engine there). Needs docker, kind and kubectl.
#   bash deploy/e2e/kind.sh            # creates the kind cluster "pgha-e2e", runs, keeps it
#   KEEP=0 bash deploy/e2e/kind.sh     # deletes the kind cluster at the end
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-pgha-e2e}
PG_MAJOR=${PG_MAJOR:-17}
KEEP=${KEEP:-1}
say() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind.sh: $tool is required (install it, then rerun)" >&2; exit 2; }
done

say "building ghcr.io/pgha/member:${PG_MAJOR} and ghcr.io/pgha/operator:0.1.0"
docker build -q -f deploy/member.Dockerfile --build-arg PG_MAJOR="$PG_MAJOR" -t "ghcr.io/pgha/member:${PG_MAJOR}" .
docker build -q -f deploy/operator.Dockerfile -t ghcr.io/pgha/operator:0.1.0 .

if ! kind get clusters | grep -qx "$CLUSTER"; then
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
kind load docker-image --name "$CLUSTER" "ghcr.io/pgha/member:${PG_MAJOR}" ghcr.io/pgha/operator:0.1.0

say "installing etcd and the operator"
kubectl apply -k deploy/
kubectl apply -k deploy/etcd/
kubectl -n pgha-system rollout status statefulset/etcd --timeout=180s
kubectl -n pgha-system rollout status deployment/pgha-operator --timeout=180s

say "creating the example PgHaCluster demo"
kubectl apply -f deploy/examples/pghacluster.yaml
kubectl wait pghacluster/demo --for=jsonpath='{.status.phase}'=Healthy --timeout=600s
PRIMARY=$(kubectl get pghacluster demo -o jsonpath='{.status.primary}')
say "demo is Healthy; primary $PRIMARY"

# The writer: psql in a loop inside the cluster, through demo-rw, one row per
# attempt; it prints "ack <id> <epoch ms>" for each acknowledged insert.
kubectl delete pod pgha-writer --ignore-not-found --wait=true >/dev/null
kubectl run pgha-writer --restart=Never --image="ghcr.io/pgha/member:${PG_MAJOR}" \
  --env=PGPASSWORD="$(kubectl get secret demo-credentials -o jsonpath='{.data.superuser-password}' | base64 -d)" \
  --command -- sh -c '
    psql -h demo-rw -U postgres -qc "CREATE TABLE IF NOT EXISTS acks (id bigint PRIMARY KEY)" || exit 1
    i=0
    while :; do
      i=$((i+1))
      if psql -h demo-rw -U postgres -qAtc "INSERT INTO acks VALUES ($i)" >/dev/null 2>&1; then
        echo "ack $i $(date +%s%3N)"
      fi
      sleep 0.01
    done'
kubectl wait pod/pgha-writer --for=condition=Ready --timeout=120s
sleep 5

say "deleting the primary's pod $PRIMARY"
DELETED_AT=$(date +%s%3N)
kubectl delete pod "$PRIMARY" --wait=false
kubectl wait pghacluster/demo --for=jsonpath='{.status.primary}'!="$PRIMARY" --timeout=300s 2>/dev/null || \
  until [ "$(kubectl get pghacluster demo -o jsonpath='{.status.primary}')" != "$PRIMARY" ]; do sleep 0.2; done
sleep 10
kubectl wait pghacluster/demo --for=jsonpath='{.status.phase}'=Healthy --timeout=600s
kubectl delete pod pgha-writer --wait=true >/dev/null &
LOGS=$(kubectl logs pgha-writer)
wait
FIRST_AFTER=$(echo "$LOGS" | awk -v t="$DELETED_AT" '$1=="ack" && $3>t {print $3; exit}')
ACKED=$(echo "$LOGS" | awk '$1=="ack" {print $2}' | paste -sd, -)
NEW_PRIMARY=$(kubectl get pghacluster demo -o jsonpath='{.status.primary}')
MISSING=$(kubectl exec "$NEW_PRIMARY" -- psql -U postgres -qAtc \
  "SELECT count(*) FROM unnest(ARRAY[${ACKED:-0}]::bigint[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM acks WHERE acks.id = a.id)")
say "primary $PRIMARY -> $NEW_PRIMARY; first acknowledged write $((FIRST_AFTER - DELETED_AT)) ms after the deletion; $(echo "$LOGS" | grep -c '^ack') acknowledged, $MISSING missing"

if [ "$KEEP" = 0 ]; then kind delete cluster --name "$CLUSTER"; fi
