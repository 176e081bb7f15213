<#
  Intune Win32 app "Thoth agent": install command.

  Package: put thoth-<version>-x64.msi and this file in one folder, then
    IntuneWinAppUtil.exe -c <folder> -s install.ps1 -o <out>
  In Intune: Apps > Windows > Add > Windows app (Win32), upload the .intunewin, then
    Install command:    powershell.exe -NoProfile -ExecutionPolicy Bypass -File install.ps1
    Uninstall command:  powershell.exe -NoProfile -ExecutionPolicy Bypass -File uninstall.ps1
    Install behavior:   System
    Return codes:       0 success; 3 success (controller not reachable yet, enrolls later);
                        5 success (already installed); 3010 soft reboot; 1618 retry;
                        anything else failed (2 settings, 4 permission, 6 wrong CA
                        fingerprint, 7 service did not start)
    Detection rule:     custom script, detect.ps1 (run as 64-bit)

  Settings: either assign the values below to HKLM\SOFTWARE\Policies\Thoth (string values
  controller, tenant, enroll_token, ca_fingerprint, root_key, labels as k=v,k=v) with a
  Settings Catalog / OMA-URI registry policy or a remediation script, or fill in $Settings
  here. Values given here win over the registry. Do not leave a real token in a script you
  share: the token only enrolls machines of one tenant, and should expire.
#>
$ErrorActionPreference = 'Stop'
$Settings = @{
    # controller     = 'https://thoth.example.com:7443'
    # tenant         = 'acme'
    # ca_fingerprint = 'sha256:...'
    # root_key       = '...'
    # labels         = 'managed-by=intune'
}
$EnrollToken = ''   # or leave empty and set enroll_token in the registry policy

$here = Split-Path -Parent $MyInvocation.MyCommand.Path
$msi = Get-ChildItem -Path $here -Filter 'thoth-*.msi' | Select-Object -First 1
# Messages go to stderr without Write-Error: with ErrorActionPreference Stop it would end the
# script with exit 1 before `exit <code>`, and Intune needs the real codes (1618: retry).
function Fail([string]$msg, [int]$code) { [Console]::Error.WriteLine($msg); exit $code }
if (-not $msi) { Fail 'thoth-*.msi is not next to install.ps1' 1 }

# 1. The MSI lays out C:\Program Files\Thoth and registers the ThothAgent service.
$log = Join-Path $env:ProgramData 'Thoth\msi-install.log'
New-Item -ItemType Directory -Force -Path (Split-Path $log) | Out-Null
$p = Start-Process msiexec.exe -Wait -PassThru -ArgumentList @('/i', "`"$($msi.FullName)`"", '/qn', '/norestart', '/l*v', "`"$log`"")
if ($p.ExitCode -ne 0 -and $p.ExitCode -ne 3010) { Fail "msiexec failed ($($p.ExitCode)), see $log" $p.ExitCode }

# 2. The installer writes the agent's settings (flags > registry policy) and starts the service.
$installer = Join-Path $env:ProgramFiles 'Thoth\thoth-installer.exe'
$installArgs = @('install')
foreach ($k in $Settings.Keys) { $installArgs += @("--$($k -replace '_','-')", $Settings[$k]) }
$tokenFile = $null
if ($EnrollToken) {
    # Handed over in a file readable by SYSTEM and Administrators only (by SID: group names are
    # localized), never on a command line. The file is made and locked down before the token
    # is written into it.
    $tokenFile = Join-Path $env:ProgramData "Thoth\token-$([guid]::NewGuid()).tmp"
    New-Item -ItemType File -Path $tokenFile | Out-Null
    icacls $tokenFile /inheritance:r /grant:r '*S-1-5-18:F' '*S-1-5-32-544:F' | Out-Null
    if ($LASTEXITCODE -ne 0) { Remove-Item -Force $tokenFile; Fail 'cannot restrict the token file' 1 }
    Set-Content -Path $tokenFile -Value $EnrollToken -NoNewline
    $installArgs += @('--enroll-token-file', $tokenFile)
}
# The installer's messages go to stderr; Windows PowerShell must not turn them into errors that
# replace its exit code.
$ErrorActionPreference = 'Continue'
try {
    & $installer @installArgs
    $rc = $LASTEXITCODE
} finally {
    if ($tokenFile) { Remove-Item -Force $tokenFile -ErrorAction SilentlyContinue }
}
switch ($rc) {
    0 { 'Thoth installed and connected' }
    3 { 'Thoth installed; the controller is not reachable yet, the agent enrolls when it is' }
    5 { 'Thoth already installed with these settings' }
    default { [Console]::Error.WriteLine("thoth-installer install failed ($rc)") }
}
exit $rc
