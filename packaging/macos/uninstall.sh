#!/bin/sh
# Removes Thoth from a Mac (a .pkg has no uninstaller): stops and removes the LaunchDaemon, gives
# every user's Claude Desktop config its original entries back, removes the files, and makes
# macOS forget the package receipt. Run as root, e.g. from a Jamf policy:
#   sh "/Library/Application Support/Thoth/doc/uninstall.sh"
# Extra arguments go to `thoth-installer uninstall` (e.g. --keep-data).
installer="${THOTH_INSTALLER:-/Library/Application Support/Thoth/bin/thoth-installer}"
if [ -x "$installer" ]; then
  "$installer" uninstall "$@" || exit $?
fi
if command -v pkgutil >/dev/null 2>&1; then
  pkgutil --forget com.thoth.agent >/dev/null 2>&1 || true
fi
exit 0
