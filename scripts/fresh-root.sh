#!/usr/bin/env bash
# make fresh-root: the README's two commands, run as a newcomer would run
# them, inside a pristine Debian 12 root built from Debian's own packages.
#
# A green CI on a machine where packages were once installed by hand proves
# nothing about a fresh machine; this run does. It
#   1. builds (once, then cached) a minimal Debian 12 root with
#      `debootstrap --variant=minbase bookworm`, from the mirror this
#      machine's apt sources name;
#   2. copies it afresh for every run, adds only what any machine that
#      clones the repository has (make, git, ca-certificates) and clones the
#      repository's committed HEAD into it (from this side, so that a git
#      worktree works too);
#   3. enters it in mount and PID namespaces of its own (chroot, with
#      /proc, /sys, /dev, a tmpfs on /run and /tmp on disk, as Debian 12
#      has them) and runs the two commands of the README's first code
#      block, in order, with CI=true (a test that cannot run fails instead
#      of skipping); as root without sudo, the leading "sudo " is dropped;
#      after each, a process or network namespace left behind fails the
#      run, as it would stay on a newcomer's machine;
#   4. runs `make lint` there too, removes the copy, and fails if any step
#      failed.
#
# Shared with the root, only download caches whose content cannot change
# what gets installed: apt's .deb archives (apt checks every .deb against
# the index it fetched), the Go module cache (go.sum checks the build's
# modules, the checksum database sum.golang.org those not in go.sum:
# staticcheck's),
# the Go toolchain zip (SHA-256 pinned in 05-go.sh) and the kernel package
# (test/vm). apt's indexes, Go's build cache, the installed tools and every
# other file come fresh each run. Nothing from the host's /usr, /etc or
# /root enters the root apart from what reaches the network as this
# machine does: its Debian mirror (and security archive), written as the
# root's own apt sources; the apt settings that reach them
# (Acquire::Check-Valid-Until, Check-Date, http::Proxy and https::Proxy
# lines) in one file, /etc/apt/apt.conf.d/99fresh-root; its DNS resolver
# configuration; and the site's certificate authorities in
# /usr/local/share/ca-certificates.
#
#   MPSA_TEST_CACHE        cache folder (default /var/cache/mpsa-test)
#   MPSA_FRESH_ROOT_DAYS   rebuild the cached base when older (default 7)
#   MPSA_FRESH_ROOT_KEEP   keep the root's copy after the run (default no)
#   MPSA_FRESH_ROOT_ONLY   "demo" or "test": run only that command (the
#                          verdict says "partial run"; CI unsets it)
#   MPSA_FRESH_ROOT_RUN    a command to run instead of the README's two
#                          (say "make scale N=50"): another target checked
#                          on a pristine root; a partial run too
#   MPSA_FRESH_ROOT_TIMEOUT  minutes the run inside may take (default 26):
#                          then it is killed and the verdict names the step
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
. scripts/deps.d/lib.sh

if [ "$(id -u)" != 0 ]; then
  echo "fresh-root: needs root (debootstrap, chroot, mounts): run it with sudo" >&2
  exit 1
fi
only=${MPSA_FRESH_ROOT_ONLY:-}
run_cmd=${MPSA_FRESH_ROOT_RUN:-}
if [ -n "$only" ] && [ -n "$run_cmd" ]; then
  echo "fresh-root: MPSA_FRESH_ROOT_ONLY and MPSA_FRESH_ROOT_RUN together: give one" >&2
  exit 1
fi
case "$only" in
"" | demo | test) ;;
*)
  echo "fresh-root: MPSA_FRESH_ROOT_ONLY=$only: want demo or test (or nothing: both, and make lint)" >&2
  exit 1
  ;;
esac
# The time limit of the run inside, in minutes: CI must end well within
# its 30.
limit=${MPSA_FRESH_ROOT_TIMEOUT:-26}
if ! [[ "$limit" =~ ^[1-9][0-9]*$ ]]; then
  echo "fresh-root: MPSA_FRESH_ROOT_TIMEOUT=$limit: want a number of minutes" >&2
  exit 1
fi
cache=${MPSA_TEST_CACHE:-/var/cache/mpsa-test}
# One run at a time: runs share apt's archive cache (whose lock would fail
# the second apt-get), the cached base and 05-go.sh's download. The lock
# is held until this script and everything it started are gone.
mkdir -p "$cache/fresh-root"
exec 9>"$cache/fresh-root/lock"
if ! flock -n 9; then
  echo "fresh-root: another run holds $cache/fresh-root/lock: waiting for it (up to 30 minutes)"
  if ! flock -w 1800 9; then
    echo "fresh-root: $cache/fresh-root/lock still held after 30 minutes: giving up" >&2
    exit 1
  fi
  echo "fresh-root: the other run is done"
fi
max_days=${MPSA_FRESH_ROOT_DAYS:-7}
t0=$(date +%s)
declare -a timings=()
lap() { # lap NAME START: records NAME's duration
  timings+=("$1 $(($(date +%s) - $2))s")
}

# archive SUITE prints the URI of the first enabled source of Debian's
# archive in this machine's apt sources (deb822 or one-line format) that
# serves SUITE with its main component, or nothing. Debian's: no
# Signed-By, or Debian's archive keyring (a third-party source would need
# a keyring the root does not have). Never written into the repository.
archive() {
  local f uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
    [ -f "$f" ] || continue
    case "$f" in
    *.sources)
      # Stanzas end at a blank line; field names ignore case; lines
      # starting with # are comments, with a space continuations.
      uri=$(awk -v want="$1" '
        function flush() {
          if (!found && uri != "" && enabled != "no" && enabled != "false" &&
            index(" " types " ", " deb ") && index(" " suites " ", " " want " ") &&
            index(" " comps " ", " main ") && (signed == "" || signed ~ /debian-archive-keyring/)) {
            print uri
            found = 1
          }
          uri = types = suites = comps = signed = enabled = ""
        }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { next }
        { key = tolower($1); $1 = ""; sub(/^ +/, "") }
        key == "types:" { types = $0 }
        key == "uris:" { uri = $1 }
        key == "suites:" { suites = $0 }
        key == "components:" { comps = $0 }
        key == "signed-by:" { signed = $0 }
        key == "enabled:" { enabled = tolower($1) }
        END { flush() }
      ' "$f")
      ;;
    /etc/apt/sources.list | *.list)
      # deb [OPTION=VALUE ...] URI SUITE COMPONENT...
      uri=$(awk -v want="$1" '
        found || $1 != "deb" { next }
        {
          i = 2
          opts = ""
          if ($2 ~ /^\[/) {
            for (; i <= NF; i++) {
              opts = opts " " $i
              if ($i ~ /\]$/) { i++; break }
            }
          }
          comps = ""
          for (j = i + 2; j <= NF && $j !~ /^#/; j++) comps = comps " " $j
          if ($(i + 1) == want && index(comps " ", " main ") && opts !~ /enabled=no/ &&
            (opts !~ /signed-by=/ || opts ~ /debian-archive-keyring/)) {
            print $i
            found = 1
          }
        }
      ' "$f")
      ;;
    *) continue ;;
    esac
    if [ -n "$uri" ]; then
      echo "$uri"
      return 0
    fi
  done
  return 0
}

# in_use says whether a process has its root, working directory or an
# open file under the folder $1.
in_use() {
  local p l
  for p in /proc/[0-9]*; do
    for l in "$p/root" "$p/cwd" "$p"/fd/*; do
      case "$(readlink "$l" 2>/dev/null)" in "$1" | "$1"/*) return 0 ;; esac
    done
  done
  return 1
}

# Copies left by runs that crashed (killed, the machine rebooted): older
# than an hour and used by no process. Their mounts were in the run's own
# mount namespace and went with it; --one-file-system keeps rm on this
# file system whatever is mounted there. A copy kept on purpose
# (MPSA_FRESH_ROOT_KEEP) stays.
for d in /var/tmp/mpsa-fresh-root.*; do
  [ -d "$d" ] && [ -n "$(find "$d" -maxdepth 0 -mmin +60)" ] || continue
  if [ -e "$d/.kept" ]; then
    echo "fresh-root: $d is a copy kept by an earlier run; rm -rf --one-file-system $d removes it"
    continue
  fi
  if in_use "$d"; then
    echo "fresh-root: $d is left from an earlier run but a process still uses it: not removing it" >&2
    continue
  fi
  echo "fresh-root: removing $d, left by a run that did not finish"
  rm -rf --one-file-system "$d" || echo "fresh-root: could not remove all of $d" >&2
done

start=$(date +%s)
install_missing debootstrap
m=$(archive bookworm)
if [ -z "$m" ]; then
  echo "fresh-root: no enabled source of Debian's archive for bookworm (main) in /etc/apt/sources.list{,.d}: cannot build a Debian 12 root" >&2
  exit 1
fi

# 1. The cached base: rebuilt when missing, older than max_days, or from
# another mirror.
base=$cache/fresh-root/bookworm-minbase
stamp="bookworm minbase $m"
if [ -f "$base/.complete" ] && [ "$(cat "$base/.complete")" = "$stamp" ] &&
  [ -z "$(find "$base/.complete" -mtime +"$max_days")" ]; then
  echo "fresh-root: cached base $base ($(date -r "$base/.complete" +%F))"
else
  echo "fresh-root: debootstrap --variant=minbase bookworm from $m (about 35 s)"
  rm -rf --one-file-system "$base.tmp"
  mkdir -p "$(dirname "$base")"
  # In a mount namespace of its own: the /proc and /sys debootstrap mounts
  # in the new root go with it, even if it is killed.
  if ! unshare --mount --propagation private -- debootstrap --variant=minbase bookworm "$base.tmp" "$m" >"$cache/fresh-root/debootstrap.log" 2>&1 9>&-; then
    tail -n 20 "$cache/fresh-root/debootstrap.log" >&2
    echo "fresh-root: debootstrap failed (log: $cache/fresh-root/debootstrap.log)" >&2
    exit 1
  fi
  echo "$stamp" >"$base.tmp/.complete"
  rm -rf --one-file-system "$base"
  mv "$base.tmp" "$base"
fi
lap base "$start"

# 2. A fresh copy, removed at exit (with anything still running in it).
start=$(date +%s)
work=$(mktemp -d /var/tmp/mpsa-fresh-root.XXXXXX)
root=$work/root
ns_pid=""
cleanup() {
  local rc=$? p pids=() i
  # Whatever fails here, the run's verdict stands.
  set +e
  # Processes whose root is the copy (a test that leaked one): stopped by
  # PID, found by their root directory, and waited for (10 s at most).
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] || continue
    echo "fresh-root: stopping leftover process ${p#/proc/} ($(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-80))" >&2
    kill -9 "${p#/proc/}" 2>/dev/null
    pids+=("${p#/proc/}")
  done
  for ((i = 0; i < 100 && ${#pids[@]} > 0; i++)); do
    for p in "${!pids[@]}"; do
      # gone, or a zombie (which has no root any more)
      [ "$(readlink "/proc/${pids[$p]}/root" 2>/dev/null)" = "$root" ] || unset "pids[$p]"
    done
    [ ${#pids[@]} -eq 0 ] || sleep 0.1
  done
  if [ ${#pids[@]} -gt 0 ]; then
    echo "fresh-root: warning: processes ${pids[*]} still run in $root after SIGKILL" >&2
  fi
  if [ "${MPSA_FRESH_ROOT_KEEP:-no}" = yes ]; then
    touch "$work/.kept"
    echo "fresh-root: kept $root (its /tmp is $work/tmp)"
  elif ! rm -rf --one-file-system "$work"; then
    echo "fresh-root: warning: could not remove all of $work (rm -rf --one-file-system $work)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
cp -a "$base" "$root"
rm -f "$root/.complete"
mkdir -m 1777 "$work/tmp"
# The root's own apt sources: this machine's Debian mirror for bookworm
# and bookworm-updates, and its security archive if it has one;
# debootstrap wrote only the main suite.
sec=$(archive bookworm-security)
rm -f "$root/etc/apt/sources.list"
{
  printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$m"
  if [ -n "$sec" ]; then
    printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$sec"
  fi
} >"$root/etc/apt/sources.list.d/debian.sources"
if [ -n "$sec" ]; then
  echo "fresh-root: apt sources: $m bookworm bookworm-updates, $sec bookworm-security"
else
  echo "fresh-root: apt sources: $m bookworm bookworm-updates (this machine has no bookworm-security source)"
fi
# Of this machine's apt settings, only those that reach the mirror (a
# snapshot mirror's dates, a proxy), one line each, not its install policy.
acquire=$(grep -hiE '^[[:space:]]*Acquire::(Check-Valid-Until|Check-Date|https?::Proxy)([[:space:]"]|::)' /etc/apt/apt.conf /etc/apt/apt.conf.d/* 2>/dev/null || true)
if [ -n "$acquire" ]; then
  printf '// From this machine'"'"'s apt settings (scripts/fresh-root.sh): how to reach the mirror.\n%s\n' "$acquire" >"$root/etc/apt/apt.conf.d/99fresh-root"
  echo "fresh-root: apt settings: $(echo "$acquire" | tr -s ' \n' ' ')"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# The site's own certificate authorities (an egress proxy's, say), which
# every machine here trusts; ca-certificates adds them to the root's store
# when the run installs it, as on any machine that has them.
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
# The download caches (see the top of this file).
mkdir -p "$cache/fresh-root/apt-archives/partial" "$cache/fresh-root/gomod" "$cache/go" "$cache/kernel/debs"
mkdir -p "$root/var/cache/apt/archives" "$root/root/go/pkg/mod" "$root$cache/go" "$root$cache/kernel/debs"
# The repository's committed HEAD, cloned from this side (a git worktree's
# .git points outside the repository, where the root cannot see), as a
# newcomer clones it; no hard links into this repository's objects.
git clone -q --no-hardlinks "$src" "$root/root/mpsa"
echo "fresh-root: cloned $(git -C "$root/root/mpsa" log -1 --format='%h %s' | cut -c1-72)"
lap copy "$start"

# 3. The run inside. The script is written into the root; the repository
# was cloned there above (committed HEAD only).
cat >"$root/root/fresh-root-run.sh" <<'INSIDE'
#!/bin/bash
set -uo pipefail
cd /root
status=0
say() { echo "fresh-root[inside]: $*"; }

# check_leftovers NAME: after the README command NAME, fails the run and
# names what it left behind in the root: processes (anything but this
# script, PID 1 of the run's own PID namespace) and network namespaces. A
# newcomer's machine would keep them. They are then stopped and removed,
# so that the next command starts clean.
check_leftovers() {
  local p pid stat i procs=() netns=()
  for i in 1 2 3 4 5 6 7 8 9 10; do # 5 s for what is still exiting
    procs=()
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      [ "$pid" != "$$" ] || continue
      stat=$(cat "$p/stat" 2>/dev/null) || continue
      stat=${stat##*) }
      [ "${stat%% *}" != Z ] || continue
      procs+=("$pid")
    done
    netns=()
    if command -v ip >/dev/null; then
      mapfile -t netns < <(ip netns list 2>/dev/null | awk '{ print $1 }')
    fi
    [ ${#procs[@]} -gt 0 ] || [ ${#netns[@]} -gt 0 ] || return 0
    sleep 0.5
  done
  status=1
  for pid in "${procs[@]}"; do
    say "LEFT BEHIND by \"$1\": process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
  done
  for p in "${netns[@]}"; do
    say "LEFT BEHIND by \"$1\": network namespace $p"
  done
  say "stopping and removing them, so that the next command starts clean"
  for pid in "${procs[@]}"; do
    kill -KILL "$pid" 2>/dev/null
  done
  for p in "${netns[@]}"; do
    ip netns delete "$p" 2>/dev/null
  done
  return 1
}
# step says what the run does now, for the verdict if it times out.
step() { echo "$*" >/root/step; }
t=$(date +%s)
step "setup: apt-get install make git ca-certificates"
say "apt-get install make git ca-certificates (what any machine that clones the repository has)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make git ca-certificates >/dev/null; }; then
  say "could not install make, git and ca-certificates"
  exit 1
fi
cd /root/mpsa
echo "timing setup $(($(date +%s) - t))s" >>/root/timings
# The README's first code block: its two commands, in order.
mapfile -t cmds < <(awk '/^```sh$/ { inside = 1; next } inside && /^```$/ { exit } inside' README.md | sed 's/[[:space:]]*#.*$//' | grep -v '^[[:space:]]*$')
if [ -n "${MPSA_FRESH_ROOT_RUN:-}" ]; then
  cmds=("$MPSA_FRESH_ROOT_RUN")
  say "instead of the README's commands: $MPSA_FRESH_ROOT_RUN (MPSA_FRESH_ROOT_RUN)"
elif [ "${#cmds[@]}" -ne 2 ]; then
  say "the README's first code block holds ${#cmds[@]} commands, not the two (demo, tests) a newcomer is promised:"
  printf '  %s\n' "${cmds[@]}"
  exit 1
fi
for c in "${cmds[@]}"; do
  run=$c
  if [ "$(id -u)" = 0 ] && ! command -v sudo >/dev/null; then
    run=${run#sudo }
  fi
  name=$(echo "$run" | awk '{print $NF}')
  [ -z "${MPSA_FRESH_ROOT_RUN:-}" ] || name=run
  if [ -n "${MPSA_FRESH_ROOT_ONLY:-}" ] && [ "$name" != "$MPSA_FRESH_ROOT_ONLY" ]; then
    say "skipping \"$c\" (MPSA_FRESH_ROOT_ONLY=$MPSA_FRESH_ROOT_ONLY)"
    continue
  fi
  label=README
  [ -z "${MPSA_FRESH_ROOT_RUN:-}" ] || label=MPSA_FRESH_ROOT_RUN
  say "$label: $c   (running: $run)"
  step "$label: $c"
  t=$(date +%s)
  if bash -c "$run"; then
    say "\"$run\" passed in $(($(date +%s) - t)) s"
  else
    say "\"$run\" FAILED after $(($(date +%s) - t)) s"
    status=1
  fi
  echo "timing $name $(($(date +%s) - t))s" >>/root/timings
  step "the check for leftovers after \"$run\""
  check_leftovers "$run"
done
if [ -z "${MPSA_FRESH_ROOT_ONLY:-}${MPSA_FRESH_ROOT_RUN:-}" ]; then
  t=$(date +%s)
  say "make lint"
  step "make lint"
  make lint || status=1
  echo "timing lint $(($(date +%s) - t))s" >>/root/timings
  step "the check for leftovers after make lint"
  check_leftovers "make lint"
fi
exit $status
INSIDE
chmod +x "$root/root/fresh-root-run.sh"

start=$(date +%s)
# In mount and PID namespaces of its own: the script run inside is PID 1
# there, with a /proc of its own, so it sees only what the run started;
# when it ends (or unshare is killed, --kill-child), the kernel kills
# whatever is left.
unshare --mount --pid --fork --kill-child --propagation private -- /bin/bash -euc '
  root=$1 cache=$2 work=$4
  # The root is a mount point of its own, as / is on a machine: ip netns
  # exec makes / a slave mount, which fails on a plain directory.
  mount --bind "$root" "$root"
  mount --rbind /dev "$root/dev"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount -t tmpfs -o mode=755 tmpfs "$root/run"
  # /tmp on disk, as on Debian 12: builds use no RAM, and
  # MPSA_FRESH_ROOT_KEEP keeps what the demo and the tests left there.
  mount --bind "$work/tmp" "$root/tmp"
  mount --bind "$cache/fresh-root/apt-archives" "$root/var/cache/apt/archives"
  mount --bind "$cache/fresh-root/gomod" "$root/root/go/pkg/mod"
  mount --bind "$cache/go" "$root$cache/go"
  mount --bind "$cache/kernel/debs" "$root$cache/kernel/debs"
  exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    MPSA_FRESH_ROOT_ONLY="${3:-}" MPSA_FRESH_ROOT_RUN="${5:-}" MPSA_GO_CACHE="$cache/go" MPSA_KERNEL_CACHE="$cache/kernel" MPSA_KERNEL_DIR="$cache/kernel/current" \
    /root/fresh-root-run.sh
' fresh-root "$root" "$cache" "$only" "$work" "$run_cmd" 9>&- &
inner=$!
# The time limit, and Ctrl-C or SIGTERM: unshare is killed, and with it
# (--kill-child) everything in the run's PID namespace. (unshare ignores
# SIGTERM, and PID 1 of the namespace every signal it has no handler for.)
stopped=""
trap 'stopped=interrupted; kill -KILL "$inner" 2>/dev/null' INT TERM
deadline=$((start + limit * 60))
while [ -d "/proc/$inner" ]; do
  inner_stat=$(cat "/proc/$inner/stat" 2>/dev/null) || break
  inner_stat=${inner_stat##*) }
  [ "${inner_stat%% *}" != Z ] || break
  if [ -z "$stopped" ] && [ "$(date +%s)" -ge "$deadline" ]; then
    stopped=timeout
    kill -KILL "$inner" 2>/dev/null
  fi
  sleep 1 || true
done
set +e
wait "$inner" 2>/dev/null # (no "Killed" line from bash)
rc=$?
set -e
trap - INT TERM
lap inside "$start"
case "$stopped" in
timeout)
  echo "fresh-root: TIMED OUT: the run inside took more than $limit minutes (MPSA_FRESH_ROOT_TIMEOUT) and was killed during: $(cat "$root/root/step" 2>/dev/null || echo "its start")" >&2
  rc=124
  ;;
interrupted)
  echo "fresh-root: interrupted during: $(cat "$root/root/step" 2>/dev/null || echo "its start"); the run inside was killed" >&2
  rc=130
  ;;
esac
if [ -f "$root/root/timings" ]; then
  while read -r _ name secs; do timings+=("$name $secs"); done <"$root/root/timings"
fi
timings+=("total $(($(date +%s) - t0))s")
echo "fresh-root: timings: ${timings[*]}"
partial=""
if [ -n "$only" ]; then
  partial=" (partial run: make $only only, MPSA_FRESH_ROOT_ONLY=$only)"
elif [ -n "$run_cmd" ]; then
  partial=" (partial run: \"$run_cmd\" instead of the README's commands, MPSA_FRESH_ROOT_RUN)"
fi
if [ "$rc" != 0 ]; then
  echo "fresh-root: FAILED: the README's commands do not pass on a pristine Debian 12 root (see above)$partial" >&2
  exit "$rc"
fi
echo "fresh-root: passed: the README's commands work on a pristine Debian 12 root$partial"
