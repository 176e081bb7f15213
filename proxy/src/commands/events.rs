//! `thoth events verify`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use thoth_proto::Verdict;
use thoth_proto::evidence::TrustAnchors;

/// Exit code when nothing is broken but, with `--ca`, not every event is proven (unsigned).
pub const EXIT_NOT_PROVEN: i32 = 3;

/// Verifies the hash chains of an events file and the signed chain heads in it. Exit 0: intact
/// (and, with `--ca`, every event covered by a signed head from that CA); 1: broken;
/// [`EXIT_NOT_PROVEN`]: with `--ca`, intact but some events unsigned.
pub fn verify(path: &Path, ca: Option<&Path>, json: bool) -> anyhow::Result<i32> {
    let anchors = match ca {
        Some(p) => {
            let pem = std::fs::read(p)
                .map_err(|e| anyhow::anyhow!("cannot read the CA {}: {e}", p.display()))?;
            Some(
                TrustAnchors::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("CA {}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let file =
        File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    // Every break is reported, and everything around them verified (not only up to the first).
    let report = thoth_proto::verify_report(BufReader::new(file), anchors.as_ref());
    if json {
        println!("{}", report.to_json());
    } else {
        for brk in &report.breaks {
            println!("BROKEN: {}:{}: {}", path.display(), brk.line, brk.reason);
        }
        for line in report.describe(&path.display().to_string()) {
            println!("{line}");
        }
    }
    Ok(match report.verdict() {
        Verdict::Broken => 1,
        Verdict::Ok => 0,
        _ if ca.is_some() => EXIT_NOT_PROVEN,
        _ => 0,
    })
}
