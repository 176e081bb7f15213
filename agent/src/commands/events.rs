//! `thoth events verify`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub fn verify(path: &Path, json: bool) -> anyhow::Result<i32> {
    let file =
        File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match thoth_proto::verify_lines(BufReader::new(file)) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "events": report.events, "chains": report.chains})
                );
            } else {
                println!(
                    "OK: {} events on {} chain(s) verified in {}",
                    report.events,
                    report.chains.len(),
                    path.display()
                );
                for (agent, seq) in &report.chains {
                    println!("  {agent}: seq 1..{seq}");
                }
                println!(
                    "Note: without signed chain heads (they come with the agent), events cut from \
                     the end of a chain, or a whole chain removed, cannot be detected here."
                );
            }
            Ok(0)
        }
        Err(brk) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "line": brk.line, "reason": brk.reason})
                );
            } else {
                println!("BROKEN: {}:{}: {}", path.display(), brk.line, brk.reason);
            }
            Ok(1)
        }
    }
}
