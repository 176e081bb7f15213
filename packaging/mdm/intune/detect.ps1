<#
  Intune Win32 app "Thoth agent": custom detection script.

  Intune treats the app as installed when this script exits 0 AND writes something to stdout.
  It asks the installer for its status (`thoth-installer status --json`) and requires: installed,
  at least $MinVersion, and the service running. An agent that is installed but stopped is
  reported as not detected, so Intune reinstalls, which repairs it in place.
#>
$MinVersion = [version]'0.1.0'
$installer = Join-Path $env:ProgramFiles 'Thoth\thoth-installer.exe'
if (-not (Test-Path $installer)) { exit 1 }
try {
    $status = & $installer status --json | Out-String | ConvertFrom-Json
} catch {
    exit 1
}
if (-not $status.installed) { exit 1 }
if ([version]$status.version -lt $MinVersion) { exit 1 }
if ($status.service -ne 'running') { exit 1 }
# Shown in Intune's device install status.
Write-Output "Thoth $($status.version): $($status.summary)"
exit 0
