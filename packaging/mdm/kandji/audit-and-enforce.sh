#!/bin/bash
# Kandji Custom App "Thoth agent": Audit and Enforce script.
#
# In Kandji: Library > Add new > Custom App; Installation: "Audit and enforce"; upload the
# Thoth .pkg; paste this file as the audit script and kandji/postinstall.sh as the
# post-install script. Assign a Custom Profile built from macos/com.thoth.agent.mobileconfig
# to the same Blueprint so the settings are in place before the package runs.
#
# Kandji runs this on every check-in: exit 0 = compliant (nothing to do); exit 1 = (re)install
# the package, which runs its postinstall and so repairs the agent in place.

INSTALLER="${THOTH_INSTALLER:-/Library/Application Support/Thoth/bin/thoth-installer}"
MIN_VERSION="${THOTH_MIN_VERSION:-0.1.0}"

# True if version $1 >= $2 (dotted numbers).
at_least() {
  local IFS=.
  local -a a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  local i
  for i in 0 1 2; do
    local x="${a[i]:-0}" y="${b[i]:-0}"
    x="${x%%[!0-9]*}" y="${y%%[!0-9]*}"
    ((10#${x:-0} > 10#${y:-0})) && return 0
    ((10#${x:-0} < 10#${y:-0})) && return 1
  done
  return 0
}

if [ ! -x "$INSTALLER" ]; then
  echo "Thoth is not installed"
  exit 1
fi
# THOTH_INSTALLER_EXTRA is for testing this script (e.g. --prefix DIR).
# shellcheck disable=SC2086
summary="$("$INSTALLER" status --summary ${THOTH_INSTALLER_EXTRA:-} 2>/dev/null)"
echo "Thoth: ${summary:-no answer}"
case "$summary" in
  "thoth "*) ;;
  *) exit 1 ;;
esac
version="${summary#thoth }"
version="${version%% *}"
if ! at_least "$version" "$MIN_VERSION"; then
  echo "Thoth $version is older than $MIN_VERSION"
  exit 1
fi
case "$summary" in
  *" running,"*) exit 0 ;;
  *) echo "the Thoth agent is not running"; exit 1 ;;
esac
