<#
  Intune Win32 app "Thoth agent": install command.

  Package: put thoth-<version>-x64.msi and this file in one folder, then
    IntuneWinAppUtil.exe -c <folder> -s install.ps1 -o <out>
  In Intune: Apps > Windows > Add > Windows app (Win32), upload the .intunewin, then
    Install command:    powershell.exe -NoProfile -ExecutionPolicy Bypass -File install.ps1
    Uninstall command:  powershell.exe -NoProfile -ExecutionPolicy Bypass -File uninstall.ps1
    Install behavior:   System
    Return codes:       0 success; 3 success (controller not reachable yet, enrolls later);
                        5 success (already installed); 3010 soft reboot; anything else failed
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
if (-not $msi) { Write-Error 'thoth-*.msi is not next to install.ps1'; exit 1 }

# 1. The MSI lays out C:\Program Files\Thoth and registers the ThothAgent service.
$log = Join-Path $env:ProgramData 'Thoth\msi-install.log'
New-Item -ItemType Directory -Force -Path (Split-Path $log) | Out-Null
$p = Start-Process msiexec.exe -Wait -PassThru -ArgumentList @('/i', "`"$($msi.FullName)`"", '/qn', '/norestart', '/l*v', "`"$log`"")
if ($p.ExitCode -ne 0 -and $p.ExitCode -ne 3010) { Write-Error "msiexec failed ($($p.ExitCode)), see $log"; exit $p.ExitCode }

# 2. The installer writes the agent's settings (flags > registry policy) and starts the service.
$installer = Join-Path $env:ProgramFiles 'Thoth\thoth-installer.exe'
$installArgs = @('install')
foreach ($k in $Settings.Keys) { $installArgs += @("--$($k -replace '_','-')", $Settings[$k]) }
$tokenFile = $null
if ($EnrollToken) {
    # Handed over in a file readable by SYSTEM and Administrators only, never on a command line.
    $tokenFile = Join-Path $env:ProgramData "Thoth\token-$([guid]::NewGuid()).tmp"
    Set-Content -Path $tokenFile -Value $EnrollToken -NoNewline
    icacls $tokenFile /inheritance:r /grant:r 'SYSTEM:F' 'Administrators:F' | Out-Null
    $installArgs += @('--enroll-token-file', $tokenFile)
}
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
    default { Write-Error "thoth-installer install failed ($rc)" }
}
exit $rc
