#!/bin/sh
# Install zeekndm as a service on a Debian/Ubuntu sensor (as root), from this checkout or
# a built wheel, into a virtual environment under /opt/zeekndm: Debian and Ubuntu refuse
# `pip install` into the system Python (PEP 668), and zeekndm is not on PyPI.
#
#   apt-get install -y python3-venv          # the venv module (ensurepip) is separate there
#   sh deploy/install.sh                     # from the checkout this script is in
#   sh deploy/install.sh --from dist/zeekndm-0.1.0-py3-none-any.whl
#   # edit /etc/zeekndm/zeekndm.yaml (inputs:, output.ndjson.path), then:
#   systemctl enable --now zeekndm && journalctl -u zeekndm -f
#
# --root DIR installs into DIR instead of / (a staging tree; no user, no systemctl), for
# packaging and for the test that runs these steps in a clean directory tree.
# --pip-args "..." passes options to pip (e.g. --no-index --find-links WHEELS offline).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
root=""
from=""
pip_args=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$2; shift 2 ;;
        --from) from=$2; shift 2 ;;
        --pip-args) pip_args=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$from" ] || from=$src
staging=false
[ -n "$root" ] && staging=true

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "install.sh: python3's venv module is missing: apt-get install -y python3-venv" >&2
    exit 1
fi

prefix="$root/opt/zeekndm"
echo "virtual environment: $prefix"
python3 -m venv "$prefix"
# shellcheck disable=SC2086
"$prefix/bin/pip" install --quiet --disable-pip-version-check $pip_args "$from"

if ! $staging; then
    if ! getent passwd zeekndm >/dev/null; then
        useradd --system --no-create-home --home-dir /var/lib/zeekndm \
            --shell /usr/sbin/nologin --user-group zeekndm
    fi
    # read access to the sensor's logs, for the groups that exist on this sensor
    for group in zeek suricata; do
        if getent group "$group" >/dev/null; then
            usermod -a -G "$group" zeekndm
        fi
    done
fi

owner=""
if ! $staging && getent group zeekndm >/dev/null; then
    owner="-o root -g zeekndm"
fi
# shellcheck disable=SC2086
install -d -m 0750 $owner "$root/etc/zeekndm"
if [ -e "$root/etc/zeekndm/zeekndm.yaml" ]; then
    echo "keeping the existing $root/etc/zeekndm/zeekndm.yaml"
else
    # shellcheck disable=SC2086
    install -m 0640 $owner "$src/config/zeekndm.yaml" "$root/etc/zeekndm/zeekndm.yaml"
fi
install -d -m 0755 "$root/etc/systemd/system" "$root/etc/logrotate.d" "$root/usr/local/bin"
install -m 0644 "$here/zeekndm.service" "$root/etc/systemd/system/zeekndm.service"
install -m 0644 "$here/zeekndm.logrotate" "$root/etc/logrotate.d/zeekndm"
ln -sf /opt/zeekndm/bin/zeekndm "$root/usr/local/bin/zeekndm"

"$prefix/bin/zeekndm" check-config --config "$root/etc/zeekndm/zeekndm.yaml" >/dev/null
if ! $staging && command -v systemctl >/dev/null; then
    systemctl daemon-reload
fi
echo "installed. Edit $root/etc/zeekndm/zeekndm.yaml (inputs:, output.ndjson.path), then:"
echo "  systemctl enable --now zeekndm && journalctl -u zeekndm -f"
