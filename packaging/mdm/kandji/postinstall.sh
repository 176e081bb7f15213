#!/bin/bash
# Kandji Custom App "Thoth agent": post-install script (runs after the Thoth .pkg).
#
# The package's own postinstall already runs `thoth-installer install` when the managed
# preferences (the Custom Profile) are present; running it again is harmless (exit 5: nothing
# changed). This script makes the outcome visible in Kandji's log, and fails the install when
# the settings are missing or wrong, so Kandji shows it and retries.

INSTALLER="${THOTH_INSTALLER:-/Library/Application Support/Thoth/bin/thoth-installer}"
# THOTH_INSTALLER_EXTRA is for testing this script (e.g. --prefix DIR --no-start).
# shellcheck disable=SC2086
"$INSTALLER" install ${THOTH_INSTALLER_EXTRA:-}
rc=$?
case $rc in
  0|5) echo "Thoth agent installed"; rc=0 ;;
  3) echo "Thoth agent installed; the controller is not reachable yet (it enrolls later)"; rc=0 ;;
  2) echo "Thoth settings are missing or wrong: is the Custom Profile assigned to this Blueprint?" ;;
  6) echo "The controller's certificate does not match ca_fingerprint in the profile" ;;
  *) echo "Thoth install failed ($rc)" ;;
esac
# shellcheck disable=SC2086
"$INSTALLER" status --summary ${THOTH_INSTALLER_EXTRA:-}
exit $rc
