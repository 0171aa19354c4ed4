#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client against a WebSocket echo endpoint and fails unless
# every case passes.
#
#   Scripts/conformance/autobahn.sh URL [CASES...]
#   e.g. Scripts/conformance/autobahn.sh ws://127.0.0.1:PORT/echo '1.*' '2.*'
#
# With no CASES it runs 1.* through 13.* (all 517 cases, about 11 minutes on 2 cores).
# On first use it installs Autobahn (Python 2.7 code) into .venv-autobahn at the repo root,
# using pyenv's CPython 2.7.18 and a Python 3 helper venv (.venv-autobahn-bootstrap) that only
# provides virtualenv<20.22; later runs reuse it as long as `wstest -a` works.
#
# wstest exits 0 even when cases fail, so the verdict comes only from OUTDIR/index.json: a case
# passes when both its behavior and behaviorClose are OK, NON-STRICT or INFORMATIONAL.
# UNIMPLEMENTED counts as a failure (permessage-deflate, 12.* and 13.*, must be implemented).
# The run also fails when index.json is missing or holds fewer cases than the patterns select.
#
# Environment:
#   AUTOBAHN_EXCLUDE   comma-separated case patterns to exclude (e.g. '12.*,13.*')
#   AUTOBAHN_TIMEOUT   time bound for wstest, as for timeout(1) (default 25m)
#   AUTOBAHN_KEEP      directory to copy the report into (index.html, index.json, per case files)
#   AUTOBAHN_AGENT     agent name in the report (default halley)
#   AUTOBAHN_VERBOSE   1 to show wstest's own output while it runs
#   AUTOBAHN_PYTHON2   CPython 2.7 interpreter (default $(pyenv root)/versions/2.7.18/bin/python)
#   PYTHON3            Python 3 used for the helper venv (default python3)
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; ws://*|wss://*) ;; *) echo "autobahn: URL must start with ws:// or wss:// (got '$1')" >&2; exit 2 ;; esac
url="$1"; shift
if [ $# -gt 0 ]; then cases=("$@"); else cases=(1.* 2.* 3.* 4.* 5.* 6.* 7.* 8.* 9.* 10.* 11.* 12.* 13.*); fi

root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv-autobahn"
boot="$root/.venv-autobahn-bootstrap"
timeout_s="${AUTOBAHN_TIMEOUT:-25m}"
agent="${AUTOBAHN_AGENT:-halley}"
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

# --- install ---------------------------------------------------------------------------------
wstest_works() { [ -x "$venv/bin/wstest" ] && "$venv/bin/wstest" -a >/dev/null 2>&1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

find_python2() {
    if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then echo "$AUTOBAHN_PYTHON2"; return; fi
    local proot
    if command -v pyenv >/dev/null 2>&1; then proot="$(pyenv root)"; else proot="${PYENV_ROOT:-$HOME/.pyenv}"; fi
    echo "$proot/versions/2.7.18/bin/python"
}

install_autobahn() {
    local py2 py3 pipq
    py2="$(find_python2)"
    if ! "$py2" -c 'import sys; assert sys.version_info[:2] == (2, 7)' >/dev/null 2>&1; then
        echo "autobahn: need CPython 2.7 at $py2 (pyenv install 2.7.18, or set AUTOBAHN_PYTHON2)" >&2
        exit 1
    fi
    py3="${PYTHON3:-python3}"
    command -v "$py3" >/dev/null 2>&1 || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3; }
    pipq=(-q --disable-pip-version-check)

    # Python 3 helper venv that only carries a virtualenv old enough to create 2.7 environments.
    if ! "$boot/bin/python" -c 'import virtualenv' >/dev/null 2>&1; then
        rm -rf "$boot"
        if ! "$py3" -m venv "$boot" >/dev/null 2>&1; then
            # Debian's system python3 needs python3-venv for ensurepip.
            rm -rf "$boot"
            as_root apt-get update -qq
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv
            "$py3" -m venv "$boot"
        fi
        "$boot/bin/pip" install "${pipq[@]}" 'virtualenv<20.22'
    fi

    rm -rf "$venv"
    "$boot/bin/python" -m virtualenv -q -p "$py2" "$venv"
    local pip=("$venv/bin/python" -m pip install "${pipq[@]}" --no-python-version-warning)
    "${pip[@]}" setuptools==44.0.0 incremental==16.10.1
    "${pip[@]}" cryptography==3.3.2 pyOpenSSL==19.1.0
    "${pip[@]}" --no-build-isolation Twisted==19.10.0 zope.interface==4.6.0
    "${pip[@]}" --no-build-isolation txaio==2.1.0 jinja2==2.11.3 markupsafe==1.1.1 Werkzeug==1.0.1 \
        klein==17.10.0 service_identity==18.1.0 unittest2==1.1.0 six==1.16.0 \
        'autobahn[twisted,accelerate]==0.10.9'
    "${pip[@]}" --no-build-isolation --no-deps autobahntestsuite==25.10.1
}

if ! wstest_works; then
    # One install at a time: concurrent runs wait here for the first one to finish.
    exec 9<"$0"
    flock -w 900 9 || { echo "autobahn: timed out waiting for another install" >&2; exit 1; }
    if ! wstest_works; then
        echo "== installing Autobahn|Testsuite into $venv"
        if ! install_autobahn; then
            rm -rf "$venv"
            echo "autobahn: install failed" >&2
            exit 1
        fi
        if ! wstest_works; then
            "$venv/bin/wstest" -a || true
            rm -rf "$venv"
            echo "autobahn: install finished but 'wstest -a' does not work" >&2
            exit 1
        fi
        echo "== installed ($(elapsed))"
    fi
    exec 9<&-
fi

# --- spec and expected case count --------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/autobahn.XXXXXX")"
trap 'rm -rf "$work"' EXIT
outdir="$work/report"
mkdir -p "$outdir"

python3 - "$work/spec.json" "$outdir" "$agent" "$url" "${AUTOBAHN_EXCLUDE:-}" "${cases[@]}" <<'PY'
import json, sys
path, outdir, agent, url, exclude = sys.argv[1:6]
spec = {
    "outdir": outdir,
    "servers": [{"agent": agent, "url": url}],
    "cases": sys.argv[6:],
    "exclude-cases": [c.strip() for c in exclude.split(",") if c.strip()],
    "exclude-agent-cases": {},
}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
PY

# The number of cases the patterns select, resolved by the test suite's own code.
expected="$("$venv/bin/python" - "$work/spec.json" <<'PY' 2>/dev/null || true
import json, sys
from autobahntestsuite.caseset import CaseSet
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
spec = json.load(open(sys.argv[1]))
cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
print(len(cs.parseSpecCases(spec)))
PY
)"
if [ -z "$expected" ]; then
    echo "autobahn: warning: could not resolve the case patterns; only checking that cases ran" >&2
elif [ "$expected" = 0 ]; then
    echo "autobahn: FAIL: the patterns (${cases[*]}) minus AUTOBAHN_EXCLUDE select no cases" >&2
    exit 1
fi

# --- run -------------------------------------------------------------------------------------
echo "== wstest fuzzingclient -> $url, cases: ${cases[*]}${AUTOBAHN_EXCLUDE:+, excluding $AUTOBAHN_EXCLUDE}${expected:+ ($expected cases)}, bound $timeout_s"
rc=0
if [ "${AUTOBAHN_VERBOSE:-0}" = 1 ]; then
    (cd "$work" && timeout --kill-after=30 "$timeout_s" "$venv/bin/wstest" -m fuzzingclient -s spec.json 2>&1 | tee wstest.log) || rc=$?
else
    (cd "$work" && timeout --kill-after=30 "$timeout_s" "$venv/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1) || rc=$?
fi
echo "== wstest finished in $(elapsed) (exit $rc)"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "autobahn: wstest did not finish within $timeout_s (AUTOBAHN_TIMEOUT)"
fi

keep() {
    if [ -n "${AUTOBAHN_KEEP:-}" ]; then
        mkdir -p "$AUTOBAHN_KEEP"
        cp -r "$outdir"/. "$AUTOBAHN_KEEP"/
        cp "$work/spec.json" "$work/wstest.log" "$AUTOBAHN_KEEP"/ 2>/dev/null || true
        echo "autobahn: report kept in $AUTOBAHN_KEEP (index.html)"
    fi
}
keep

# --- verdict from index.json -----------------------------------------------------------------
verdict=0
python3 - "$outdir" "$agent" "$expected" <<'PY' || verdict=$?
import json, os, re, sys
outdir, agent, expected = sys.argv[1], sys.argv[2], sys.argv[3]
KINDS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "WRONG CODE", "UNCLEAN"]
PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}

index_path = os.path.join(outdir, "index.json")
if not os.path.exists(index_path):
    print("autobahn: FAIL: no index.json (wstest did not finish or could not connect)")
    sys.exit(2)
with open(index_path) as f:
    index = json.load(f)
results = index.get(agent)
if results is None:
    print("autobahn: FAIL: index.json has no results for agent %r (agents: %s)" % (agent, ", ".join(index) or "none"))
    sys.exit(2)

def key(case_id):
    return [int(p) if p.isdigit() else p for p in case_id.split(".")]

def counts(field):
    c = {k: 0 for k in KINDS}
    for r in results.values():
        b = r.get(field, "MISSING")
        c[b] = c.get(b, 0) + 1
    return ", ".join("%s %d" % (k, n) for k, n in c.items())

def clean(text, limit=240):
    text = re.sub(r"<[^>]+>", "", str(text))
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."

n = len(results)
print("autobahn: %d cases: %s" % (n, counts("behavior")))
print("autobahn: close:    %s" % counts("behaviorClose"))

failed = [c for c in sorted(results, key=key)
          if results[c].get("behavior") not in PASS or results[c].get("behaviorClose") not in PASS]
for c in failed:
    r = results[c]
    line = "  FAIL %s: behavior %s, behaviorClose %s" % (c, r.get("behavior"), r.get("behaviorClose"))
    detail = {}
    try:
        with open(os.path.join(outdir, r["reportfile"])) as f:
            detail = json.load(f)
    except Exception:
        pass
    print(line)
    if detail.get("description"):
        print("       case:   " + clean(detail["description"]))
    if r.get("behavior") not in PASS and detail.get("result"):
        print("       result: " + clean(detail["result"]))
    if r.get("behaviorClose") not in PASS and detail.get("resultClose"):
        print("       close:  " + clean(detail["resultClose"]))

status = 0
if failed:
    print("autobahn: FAIL: %d of %d cases failed" % (len(failed), n))
    status = 1
if n == 0:
    print("autobahn: FAIL: no cases ran")
    status = 2
elif expected.isdigit() and n < int(expected):
    print("autobahn: FAIL: only %d of the %s selected cases have results" % (n, expected))
    status = 2
if status == 0:
    print("autobahn: PASS: all %d cases OK, NON-STRICT or INFORMATIONAL" % n)
sys.exit(status)
PY

# Show wstest's own output when the run itself went wrong (not for ordinary case failures).
if [ "$verdict" = 2 ] || [ "$rc" != 0 ]; then
    echo "== last lines of wstest output:"
    tail -n 15 "$work/wstest.log" | sed 's/^/   /'
fi
[ "$rc" = 0 ] || [ "$verdict" != 0 ] || verdict=1
[ "$verdict" = 0 ] || verdict=1
echo "== autobahn done in $(elapsed)"
exit "$verdict"
