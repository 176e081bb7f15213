use std::os::unix::fs::symlink;

use super::*;
use crate::policy::{LoadedPolicy, PolicyState};

fn relay(policy: &str) -> Arc<Relay> {
    let policy = thoth_policy::parse_policy(policy, "p.yaml", thoth_policy::Format::Yaml).unwrap();
    let server = policy.resolve("fs", &[]);
    Arc::new(Relay::new(
        ClientOut::new(Box::new(io::sink())),
        EventSink::disabled(),
        PolicyState::Loaded(Arc::new(LoadedPolicy {
            policy,
            server,
            version: "1".into(),
        })),
        "fs".into(),
        "01a20abe-2043-7512-8916-ba4700421315",
    ))
}

#[test]
fn path_constraints_follow_symlinks_out_of_the_allowed_tree() {
    let root = std::env::temp_dir().join(format!("thoth-symlinks-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(root.join("public")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    std::fs::write(root.join("notes.txt"), "secret").unwrap();
    std::fs::write(root.join("public/a.txt"), "ok").unwrap();
    symlink("../notes.txt", root.join("public/link.txt")).unwrap();
    symlink("../private", root.join("public/dir")).unwrap();
    let root = std::fs::canonicalize(root).unwrap();
    let r = relay(&format!(
        "servers:\n  - name: fs\n    enforcement: block\n    approved_scope: [read_file, write_file]\n    constraints: [{{tool: \"*\", arg: path, path_glob: [\"{}/public/**\"]}}]\n",
        root.display()
    ));
    let call = |id: u32, tool: &str, rel: &str| {
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"path":"{}/{rel}","content":"x"}}}}}}"#,
            root.display()
        );
        matches!(r.from_client(line.as_bytes()), ToServer::Original)
    };
    assert!(call(1, "read_file", "public/a.txt"), "inside: forwarded");
    assert!(
        !call(2, "read_file", "public/link.txt"),
        "a link to ../notes.txt"
    );
    assert!(
        !call(3, "write_file", "public/dir/new.txt"),
        "a write through a symlinked directory"
    );
    assert!(
        !call(4, "write_file", "public/dir/../../notes.txt"),
        "`..` after a symlinked directory"
    );
    assert!(
        call(5, "write_file", "public/new/deeper.txt"),
        "new files inside"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
