<#
  Intune Win32 app "Thoth agent": uninstall command.

  First the installer stops the service and gives every user's Claude Desktop config its
  original entries back; then the MSI removes the program files and the service registration.
#>
$installer = Join-Path $env:ProgramFiles 'Thoth\thoth-installer.exe'
if (Test-Path $installer) {
    & $installer uninstall
    # A file left behind (locked) is reported but does not stop the MSI removal below.
    if ($LASTEXITCODE -ne 0) { [Console]::Error.WriteLine("thoth-installer uninstall: exit $LASTEXITCODE") }
}
# The MSI's product code, from its uninstall entry (DisplayName is the WiX Product Name).
$entries = Get-ChildItem 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall' |
    Get-ItemProperty | Where-Object { $_.DisplayName -eq 'Thoth agent' }
foreach ($e in $entries) {
    $r = Start-Process msiexec.exe -Wait -PassThru -ArgumentList @('/x', $e.PSChildName, '/qn', '/norestart')
    if ($r.ExitCode -ne 0 -and $r.ExitCode -ne 3010) { exit $r.ExitCode }
}
exit 0
