# Debian programs without root, for scripts/check-deploy, scripts/test and
# scripts/check-image. Source it, then:
#
#   deb_tool COMMAND PACKAGE   # puts COMMAND on PATH, fetching PACKAGE if needed
#
# A COMMAND the machine already has is used as it is. Otherwise PACKAGE and
# whatever of its dependencies this machine lacks (as `apt-get install`
# would resolve them, simulated) are downloaded with `apt-get download` and
# unpacked with `dpkg -x` under target/deb-tools/root; COMMAND then runs
# from there through a small wrapper in target/deb-tools/bin that points
# the loader at the unpacked libraries (set for that program only, so
# nothing else the scripts run sees them). No root, nothing installed
# outside target/, the same on CI (root) and on a developer's laptop.
#
# When the machine's package lists are missing or out of date (a fresh
# container, a download that 404s), apt runs on lists of its own under
# target/deb-tools/apt, fetched by `apt-get update` as an ordinary user.
#
# CVNOTIFY_FETCH_TOOLS=1 fetches even commands the machine has: the path a
# fresh machine takes, tried on one that is not.

DEB_TOOLS="${DEB_TOOLS:-$PWD/target/deb-tools}"

_deb_apt_private() {
    local d="$DEB_TOOLS/apt"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    _DEB_APT_OPTS+=(-o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o Debug::NoLocking=1)
    if [ ! -e "$d/updated" ]; then
        echo "deb-tools: fetching Debian's package lists into $d (the machine's are missing or stale)" >&2
        apt-get "${_DEB_APT_OPTS[@]}" -qq update >&2 || return 1
        touch "$d/updated"
    fi
}

# Downloads and unpacks PACKAGE and the dependencies this machine lacks.
_deb_fetch() {
    local pkg=$1 debs="$DEB_TOOLS/debs" names
    mkdir -p "$debs" "$DEB_TOOLS/root"
    _DEB_APT_OPTS=()
    # As root apt downloads as `_apt`, who may not write into target/.
    [ "$(id -u)" != 0 ] || _DEB_APT_OPTS=(-o APT::Sandbox::User=root)
    # The machine's lists first; our own when they do not know the package
    # or name a version the archive no longer has.
    for attempt in system private; do
        if [ "$attempt" = private ]; then
            _deb_apt_private || return 1
        fi
        names=$(apt-get "${_DEB_APT_OPTS[@]}" -s -qq install --no-install-recommends "$pkg" 2>/dev/null |
            awk '/^Inst /{print $2}') || names=
        # The package itself even when the machine has it installed (its
        # command then is off PATH, or CVNOTIFY_FETCH_TOOLS asked for it).
        case " $names " in *" $pkg "*) ;; *) names="$pkg $names" ;; esac
        # shellcheck disable=SC2086 # one word per package
        if (cd "$debs" && apt-get "${_DEB_APT_OPTS[@]}" -qq download $names >&2); then
            for name in $names; do
                for deb in "$debs/${name}"_*.deb; do
                    dpkg -x "$deb" "$DEB_TOOLS/root"
                done
            done
            return 0
        fi
    done
    echo "deb-tools: could not download Debian's $pkg (is the Debian archive reachable?)" >&2
    return 1
}

deb_tool() {
    local cmd=$1 pkg=$2 bin="$DEB_TOOLS/bin"
    mkdir -p "$bin"
    case ":$PATH:" in *":$bin:"*) ;; *) export PATH="$bin:$PATH" ;; esac
    if [ -x "$bin/$cmd" ]; then
        return 0
    fi
    if [ -z "${CVNOTIFY_FETCH_TOOLS:-}" ] && command -v "$cmd" >/dev/null; then
        return 0
    fi
    local found
    # No root yet (a fresh target/): nothing found, not a failure.
    found=$(find "$DEB_TOOLS/root" -path "*bin/$cmd" -type f 2>/dev/null | head -n1) || true
    if [ -z "$found" ]; then
        echo "deb-tools: $cmd is missing: fetching Debian's $pkg into $DEB_TOOLS (no root needed)" >&2
        _deb_fetch "$pkg" || return 1
        found=$(find "$DEB_TOOLS/root" -path "*bin/$cmd" -type f | head -n1)
        [ -n "$found" ] || { echo "deb-tools: $pkg has no $cmd" >&2; return 1; }
    fi
    local libs units root="$DEB_TOOLS/root"
    libs=$(find "$root/lib" "$root/usr/lib" \( -name '*.so' -o -name '*.so.*' \) -printf '%h\n' 2>/dev/null |
        sort -u | paste -sd:) || true
    # Units the package ships (systemd's targets) are found by systemd-analyze
    # through SYSTEMD_UNIT_PATH; the trailing colon keeps the default paths.
    units=$(find "$root/lib/systemd/system" "$root/usr/lib/systemd/system" -maxdepth 0 -type d 2>/dev/null | paste -sd:) || true
    cat > "$bin/$cmd" <<EOF
#!/bin/sh
# Written by scripts/lib/deb-tools.sh: $cmd from Debian's $pkg, unpacked here.
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
${units:+export SYSTEMD_UNIT_PATH="$units:"}
exec "$found" "\$@"
EOF
    chmod +x "$bin/$cmd"
}
