#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the Go module k8s.io/kubernetes at one pinned
# release and caches them in $VISMIG_SERVICES_CACHE/kube/<version>/.
# Usage: tests/services/build-kube.sh [vX.Y.Z]   (default $KUBE_VERSION; prints the directory)
#
# k8s.io/kubernetes' go.mod replaces each k8s.io/* staging module (k8s.io/api,
# k8s.io/apiserver, ...) with a local path (./staging/src/...) that its module archive
# does not contain, so `go install k8s.io/kubernetes/cmd/...@v` fails. The usual way to
# build Kubernetes components as a dependency: a scratch module that requires
# k8s.io/kubernetes and replaces every staging module by its published version
# (v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>). GOTOOLCHAIN=local as in
# build-tools.sh.
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

version=${1:-$KUBE_VERSION}
out=$(kube_dir "$version")
go_build_begin "kubernetes $version" "$out" kube "kube-$version"

staging_version="v0.${version#v1.}"
(
  cd "$GO_BUILD_SCRATCH"
  export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--buildvcs=false}"
  go mod init vismig-kube
  go mod download -json "k8s.io/kubernetes@$version" >kubernetes.json
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' kubernetes.json)
  [ -f "$gomod" ] || { echo "k8s.io/kubernetes@$version: no go.mod in the module cache"; exit 1; }
  # Every staging module the release replaces with a local path, by its published version.
  staging=$(awk '/=> \.\/staging\/src\// { print $1 }' "$gomod" | sort -u)
  [ -n "$staging" ] || { echo "k8s.io/kubernetes@$version: no staging replaces found in its go.mod"; exit 1; }
  args=(-require="k8s.io/kubernetes@$version")
  for m in $staging; do args+=(-replace="$m=$m@$staging_version"); done
  go mod edit "${args[@]}"
  # The release's own Go version floor and its other replaces (none but staging today).
  go mod edit -go="$(awk '$1 == "go" { print $2; exit }' "$gomod")"
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy -e
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitVersion=$version" \
    -o "$out.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
) >>"$GO_BUILD_LOG" 2>&1 || go_build_failed "kubernetes $version"

go_build_finish "$out"
