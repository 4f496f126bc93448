#!/usr/bin/env bash
# The one place that knows how to get the Kubernetes control plane the tests run against:
# etcd, kube-apiserver and kube-controller-manager, from Debian's packages alone (no Docker,
# no cluster, nothing downloaded but Debian packages).
#
#   scripts/kube-binaries.sh ensure   build them unless the cache has them; print the directory
#   scripts/kube-binaries.sh path     print the directory if the cache has them, else exit 1
#
# * etcd: the binary of Debian's etcd-server package (`apt-get download` + `dpkg-deb -x`, so
#   no system service is installed or started).
# * kube-apiserver and kube-controller-manager: built from Debian's `kubernetes` source
#   package (the full upstream tree with vendor/) with Debian's golang-1.19-go, as Debian's
#   own debian/rules builds it (`make WHAT=...`, CGO_ENABLED=0). The vendored
#   github.com/modern-go/reflect2 1.0.1 is swapped for Debian's 1.0.2, which works with
#   Go >= 1.18 (1.0.1 reads runtime internals that changed and crashes at start).
#
# The binaries are cached outside the checkout, keyed on the two package versions, in
# $CTCD_KUBE_CACHE (default: /var/cache/ctcd/kubernetes as root, else
# ${XDG_CACHE_HOME:-~/.cache}/ctcd/kubernetes). A build takes about 8 minutes on one core
# and leaves about 230 MB; a machine that has them skips it. The source index is read
# through a private apt configuration (deb-src lines made from the machine's own deb lines),
# so the machine's apt setup is not changed.
set -euo pipefail

# The versions the Kubernetes suite is verified against (Debian bookworm).
KUBERNETES_SOURCE=1.20.5+really1.20.2-1.1+deb12u1
ETCD_PACKAGE=3.4.23-4+b4
GO=/usr/lib/go-1.19/bin

here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" = 0 ]; then default_cache=/var/cache/ctcd/kubernetes
else default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/ctcd/kubernetes; fi
cache=${CTCD_KUBE_CACHE:-$default_cache}
dir=$cache/kubernetes-${KUBERNETES_SOURCE}_etcd-${ETCD_PACKAGE}
BINARIES=(etcd kube-apiserver kube-controller-manager)

complete() {
  local binary
  for binary in "${BINARIES[@]}"; do
    [ -x "$dir/$binary" ] || return 1
  done
}

# apt-get with a private source list (deb and deb-src lines of the machine's own mirrors)
# and private lists, so `apt-get source` works without touching /etc/apt.
private_apt() {
  local work=$1 parts=$1/apt/parts
  mkdir -p "$parts" "$work/apt/lists/partial"
  {
    shopt -s nullglob
    for file in /etc/apt/sources.list.d/*.sources; do
      sed -E 's/^Types:.*/Types: deb deb-src/' "$file"
      echo
    done
  } >"$work/apt/parts/mirrors.sources"
  if [ -f /etc/apt/sources.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | sed 'p;s/^deb /deb-src /' \
      >"$work/apt/parts/mirrors.list" || true
  fi
  APT_OPTIONS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$parts"
               -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache::Archives=$work/apt"
               -o "APT::Sandbox::User=root")
  apt-get -q "${APT_OPTIONS[@]}" update >/dev/null
}

build() {
  "$here/system-packages.sh" ensure kube-binaries
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "Building the Kubernetes control plane for the tests into $dir (about 8 minutes)"
  private_apt "$work"
  cd "$work"

  echo "etcd: Debian's etcd-server $ETCD_PACKAGE"
  apt-get -q "${APT_OPTIONS[@]}" download "etcd-server=$ETCD_PACKAGE" >/dev/null
  dpkg-deb -x etcd-server_*.deb etcd-root
  mkdir -p out
  cp etcd-root/usr/bin/etcd out/etcd

  echo "kube-apiserver, kube-controller-manager: Debian's kubernetes source $KUBERNETES_SOURCE"
  apt-get -q "${APT_OPTIONS[@]}" source --download-only "kubernetes=$KUBERNETES_SOURCE" \
    >/dev/null
  # apt checked the files against the signed source index; dpkg-source only warns that it
  # has no key for the uploader's signature of the .dsc.
  dpkg-source -q -x kubernetes_*.dsc src >/dev/null 2>"$work/dpkg-source.log" \
    || { cat "$work/dpkg-source.log" >&2; exit 1; }
  rm -rf src/vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 src/vendor/github.com/modern-go/
  local started=$SECONDS
  (
    cd src
    export PATH="$GO:$PATH" CGO_ENABLED=0 GOFLAGS= GOCACHE="$work/go-cache" HOME="$work"
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1 \
      || { tail -40 "$work/build.log" >&2; exit 1; }
  )
  cp src/_output/bin/kube-apiserver src/_output/bin/kube-controller-manager out/
  echo "built in $((SECONDS - started)) s"
  rm -rf "$dir"
  mv out "$dir"
}

case ${1:-} in
  path)
    complete && echo "$dir"
    ;;
  ensure)
    if ! complete; then
      # One build at a time per cache (two test runs starting together wait for the first).
      mkdir -p "$cache"
      exec 9>"$cache/.lock"
      flock 9
      complete || build >&2
    fi
    echo "$dir"
    ;;
  *)
    echo "usage: $0 ensure|path" >&2
    exit 2
    ;;
esac
