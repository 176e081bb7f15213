#!/bin/bash
# Jamf Pro policy script: configure and start the Thoth agent after the Thoth .pkg is installed.
#
# In Jamf Pro: Settings > Computer Management > Scripts > New, paste this file, and label the
# parameters below. Then make a policy with (1) a Packages payload installing thoth-<version>.pkg
# and (2) a Scripts payload running this script "After", with the parameter values filled in.
# If a configuration profile already carries the settings (macos/com.thoth.agent.mobileconfig),
# leave parameters 4-9 empty: the installer reads the managed preferences.
#
#   $4  controller URL          https://thoth.example.com:7443
#   $5  tenant                  acme
#   $6  enrollment token        from `thothctl token create --uses <fleet size> --ttl 30d`
#   $7  CA fingerprint          sha256:... (`thoth-controller info`)
#   $8  root key                base64 (`thoth-controller info`)
#   $9  labels                  k=v,k=v (optional)
#
# Jamf passes $1-$3 (mount point, computer name, user name) itself. The token is handed to the
# installer in a root-only temp file, never on its command line, and is not printed to the Jamf
# policy log. Jamf itself passes script parameters as arguments, so the token is visible in `ps`
# for this script's short life: to avoid even that, put enroll_token in the configuration
# profile instead and leave parameter 6 empty.
#
# Exit status (shown in the policy log): 0 installed and reaching the controller; 3 installed,
# controller not reachable yet (the agent enrolls on its own later: Jamf still reports success);
# anything else is a failure, with the installer's message above it.

set -u
INSTALLER="${THOTH_INSTALLER:-/Library/Application Support/Thoth/bin/thoth-installer}"

if [ ! -x "$INSTALLER" ]; then
  echo "thoth: $INSTALLER is missing: install the Thoth package before this script" >&2
  exit 1
fi

args=(install)
[ -n "${4:-}" ] && args+=(--controller "$4")
[ -n "${5:-}" ] && args+=(--tenant "$5")
[ -n "${7:-}" ] && args+=(--ca-fingerprint "$7")
[ -n "${8:-}" ] && args+=(--root-key "$8")
[ -n "${9:-}" ] && args+=(--labels "$9")
# Extra installer arguments for testing this script (e.g. --prefix DIR --no-start).
if [ -n "${THOTH_INSTALLER_EXTRA:-}" ]; then
  read -r -a extra <<<"$THOTH_INSTALLER_EXTRA"
  args+=("${extra[@]}")
fi

token_file=""
cleanup() { [ -n "$token_file" ] && rm -f "$token_file"; }
trap cleanup EXIT
if [ -n "${6:-}" ]; then
  # mktemp makes the file 0600; the umask stays as it was for the installer.
  token_file="$(mktemp "${TMPDIR:-/tmp}/thoth-token.XXXXXX")"
  printf '%s\n' "$6" >"$token_file"
  args+=(--enroll-token-file "$token_file")
fi

"$INSTALLER" "${args[@]}"
rc=$?
case "$rc" in
  0) echo "thoth: installed and connected" ;;
  3) echo "thoth: installed; the controller is not reachable yet, the agent will enroll when it is"; rc=0 ;;
  5) echo "thoth: already installed with these settings"; rc=0 ;;
  *) echo "thoth: install failed (exit $rc)" >&2 ;;
esac
exit "$rc"
