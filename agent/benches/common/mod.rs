//! Shared by the benchmarks.
#![allow(dead_code)]

/// The benchmark policy: 50 servers × 50 tools, argument globs, constraints, a sequence rule.
pub fn policy_50x50() -> String {
    let mut y = String::from(
        "name: bench\nversion: 1\ndefaults:\n  enforcement: block\n  unknown_servers: block\nservers:\n",
    );
    for s in 0..50 {
        y.push_str(&format!(
            "  - name: \"srv-{s}\"\n    enforcement: block\n    approved_scope:\n"
        ));
        for t in 0..50 {
            y.push_str(&format!("      - tool_{t}\n"));
        }
        y.push_str("      - \"read_*\"\n    deny: [\"drop_*\", \"exec_*\"]\n    constraints:\n");
        y.push_str("      - tool: \"{tool_*,read_*}\"\n        arg: path\n        path_glob: [\"/srv/data/**\", \"/home/*/projects/**\"]\n");
        y.push_str("      - tool: \"tool_1*\"\n        arg: mode\n        one_of: [read, list]\n");
        y.push_str("    sequences:\n      - after: \"read_*\"\n        then: \"send_*\"\n        action: deny\n");
    }
    y
}
