//! The .deb package: built with packaging/deb/build, inspected with dpkg-deb, extracted into a
//! throw-away root.

use std::path::Path;
use std::process::Command;

fn dpkg_deb(args: &[&str]) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .output()
        .expect("dpkg-deb is installed");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_deb_has_the_binaries_the_scripts_and_installs_into_a_throw_away_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = tempfile::tempdir().unwrap();
    let build = Command::new(root.join("packaging/deb/build"))
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let deb = String::from_utf8_lossy(&build.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let info = dpkg_deb(&["-I", &deb]);
    assert!(
        info.contains("Package: thoth") && info.contains("postinst") && info.contains("prerm"),
        "{info}"
    );
    let list = dpkg_deb(&["-c", &deb]);
    for b in ["thoth", "thoth-agent", "thoth-installer"] {
        let line = list
            .lines()
            .find(|l| l.ends_with(&format!("./usr/local/bin/{b}")))
            .unwrap_or_else(|| panic!("{b} missing: {list}"));
        assert!(line.starts_with("-rwxr-xr-x root/root"), "{line}");
    }
    // Extracted into a throw-away root, the binaries run.
    let tree = tempfile::tempdir().unwrap();
    dpkg_deb(&["-x", &deb, tree.path().to_str().unwrap()]);
    let v = Command::new(tree.path().join("usr/local/bin/thoth-installer"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("thoth-installer "));
    // The maintainer scripts call the installer; an upgrade (prerm "upgrade") keeps everything.
    let ctl = tempfile::tempdir().unwrap();
    dpkg_deb(&["-e", &deb, ctl.path().to_str().unwrap()]);
    let postinst = std::fs::read_to_string(ctl.path().join("postinst")).unwrap();
    assert!(postinst.contains("thoth-installer install"), "{postinst}");
    let prerm = std::fs::read_to_string(ctl.path().join("prerm")).unwrap();
    assert!(
        prerm.contains("\"$1\" = \"remove\"") && prerm.contains("uninstall --keep-data"),
        "{prerm}"
    );
    let upgrade = Command::new("sh")
        .arg(ctl.path().join("prerm"))
        .arg("upgrade")
        .output()
        .unwrap();
    assert!(upgrade.status.success());
    let postrm = std::fs::read_to_string(ctl.path().join("postrm")).unwrap();
    assert!(postrm.contains("\"$1\" = \"purge\""), "{postrm}");
}
