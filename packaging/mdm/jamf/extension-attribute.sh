#!/bin/bash
# Jamf Pro extension attribute "Thoth agent": one line per computer, for smart groups and
# inventory reports.
#
# In Jamf Pro: Settings > Computer Management > Extension Attributes > New; Data Type: String;
# Input Type: Script; paste this file. Example values:
#   thoth 0.1.0 running, enrolled, policy v7, 2/2 MCP servers governed, 0 remote, in 2 files of 2 clients
#   thoth 0.1.0 stopped, not enrolled, no policy, 0/3 MCP servers governed, 1 remote, in 1 files of 1 clients
#   not installed
# A smart group "Thoth needs attention" can then match: does not contain "running, enrolled",
# or whose two counts before "MCP servers governed" differ.

INSTALLER="${THOTH_INSTALLER:-/Library/Application Support/Thoth/bin/thoth-installer}"
if [ -x "$INSTALLER" ]; then
  # THOTH_INSTALLER_EXTRA is for testing this script (e.g. --prefix DIR).
  # shellcheck disable=SC2086
  result="$("$INSTALLER" status --summary ${THOTH_INSTALLER_EXTRA:-} 2>&1)"
  rc=$?
  # 0: installed, 1: not installed; anything else is the installer failing: show why.
  if [ "$rc" -gt 1 ]; then
    result="error: ${result#error: }"
    [ "$result" = "error: " ] && result="error: thoth-installer status exited $rc"
  fi
else
  result="not installed"
fi
echo "<result>${result:-not installed}</result>"
