//! Ownership: nothing of one user's files is read for another, and events name a home's owner
//! by login.

use std::path::Path;

use thoth_hosts::host::HostFilter;

use super::super::guardian::{Guardian, user_of};
use super::{CURSOR, Fake, Laptop, PLAIN, THOTH, read};

/// Gives `path` and everything under it (links themselves, not followed) to `uid`.
fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    let is_dir = std::fs::symlink_metadata(path).unwrap().is_dir();
    if is_dir {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// A uid with no passwd entry (from `from` on).
fn unnamed_uid(from: u32) -> u32 {
    (from..from + 10_000)
        .find(|u| crate::daemon::local::login_name(*u).is_none())
        .unwrap()
}

/// What `uid` (named `user`) would see of the agent's status holding the guardian's statuses
/// and events, as JSON.
fn seen_by(l: &Laptop, uid: u32, user: &str) -> String {
    let mut st = thoth_endpoint::status::Status {
        configs: l.fake.statuses.lock().unwrap().clone(),
        ..Default::default()
    };
    for (t, _, d) in l.fake.events.lock().unwrap().iter() {
        st.note(t, d.clone());
    }
    serde_json::to_string(&st.only_for(uid, user)).unwrap()
}

const BOB_TEXT: &str = r#"{"mcpServers": {"bobs-tool": {"command": "/home/bob/secret-tool", "args": ["--token", "b0b-secret"]}, "bobs-remote": {"url": "https://b0b-secret@mcp.example/sse"}}}"#;

/// Review F1: the guardian listed `host.files(home)` without discovery's owner filter, so a
/// user whose `~/.cursor` links to another user's `.cursor` made the root agent read that
/// user's servers (secrets in args and URLs) into their own status and events. Now such a file
/// is read only as the home's owner: listed, refused with why, never read for them — also a
/// link swapped in after discovery.
#[test]
fn another_users_file_reached_through_a_link_is_not_read_for_this_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: ownership only matters to the root agent");
        return;
    }
    let l = Laptop::new(None);
    let ann_uid = unnamed_uid(41_001);
    let bob_uid = unnamed_uid(ann_uid + 1);
    let bob_file = l.put("bob", CURSOR, BOB_TEXT);
    chown_tree(&l.home("bob"), bob_uid);
    std::fs::create_dir_all(l.home("ann")).unwrap();
    // Ann's ~/.cursor is a link to Bob's.
    std::os::unix::fs::symlink(l.home("bob").join(".cursor"), l.home("ann").join(".cursor"))
        .unwrap();
    chown_tree(&l.home("ann"), ann_uid);
    let ann = user_of(&l.home("ann"));
    assert_eq!(ann, "ann", "no passwd entry: the home's name");
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    // Ann's path is seen (listed, refused with why) but nothing of Bob's is read for her.
    let leaked = |g: &Guardian<Fake>| {
        let events = l.fake.events.lock().unwrap().clone();
        let secret = |d: &str| d.contains("b0b") || d.contains("bobs-");
        let mut bad: Vec<String> = events
            .iter()
            .filter(|(_, _, d)| {
                (d.contains(&l.home("ann").display().to_string())
                    || d.starts_with(&format!("Cursor: {ann}: ")))
                    && secret(d)
            })
            .map(|(_, _, d)| d.clone())
            .collect();
        bad.extend(
            g.statuses
                .iter()
                .filter(|(p, _)| p.starts_with(l.home("ann")))
                .filter(|(_, st)| st.state != "refused" || st.error.as_deref().is_some_and(secret))
                .map(|(p, st)| format!("{}: {st:?}", p.display())),
        );
        let seen = seen_by(&l, ann_uid, &ann);
        if seen.contains("b0b") || seen.contains("bobs-") {
            bad.push(seen);
        }
        bad
    };
    assert_eq!(leaked(&g), Vec::<String>::new());
    // Bob's file is governed as his, and his remote server reported as his.
    assert_eq!(l.fake.status(&bob_file).unwrap().state, "governed");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert!(
        ung.len() == 1 && ung[0].1.starts_with("Cursor: bob: bobs-remote"),
        "{ung:?}"
    );
    assert!(seen_by(&l, bob_uid, "bob").contains("bobs-remote"));

    // Ann's own file, found; then her ~/.cursor is swapped for the link before the guardian
    // reads it again: refused when opened, nothing of Bob's read into Ann's status.
    std::fs::remove_file(l.home("ann").join(".cursor")).unwrap();
    let own = l.put("ann", CURSOR, PLAIN);
    chown_tree(&l.home("ann"), ann_uid);
    g.full_pass("periodic check", false);
    assert_eq!(l.fake.status(&own).unwrap().state, "governed");
    let bobs = read(&bob_file);
    std::fs::rename(
        l.home("ann").join(".cursor"),
        l.home("ann").join(".cursor-old"),
    )
    .unwrap();
    std::os::unix::fs::symlink(l.home("bob").join(".cursor"), l.home("ann").join(".cursor"))
        .unwrap();
    chown_tree(&l.home("ann"), ann_uid);
    assert!(!g.process(&own, "the file changed"));
    assert_eq!(
        read(&bob_file),
        bobs,
        "Bob's file untouched through Ann's path"
    );
    let st = l.fake.status(&own).unwrap();
    assert_eq!(st.state, "refused", "{st:?}");
    assert!(
        st.error
            .as_deref()
            .is_some_and(|e| e.contains("not by the home's owner") && !e.contains("b0b")),
        "{st:?}"
    );
    let seen = seen_by(&l, ann_uid, &ann);
    assert!(!seen.contains("b0b") && !seen.contains("bobs-"), "{seen}");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 1, "{ung:?}");
}

/// Review F7: events named a home's user by the home's directory name, while a user's status
/// is filtered by their login name: a home not named after its login (`/Users/Ann.Smith`, or
/// Bob's home named `ann`) showed one user's MCP_SERVER_UNGOVERNED details to another. Now the
/// user is the login name of the home's owner (the directory's name only for a uid with no
/// passwd entry).
#[test]
fn events_name_the_homes_owner_by_login_not_the_homes_directory_name() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: homes cannot be given to other users");
        return;
    }
    let (login_uid, login) = (1..1000)
        .chain([65_534])
        .find_map(|u| {
            crate::daemon::local::login_name(u)
                .filter(|n| n != "ann")
                .map(|n| (u, n))
        })
        .expect("a uid with a passwd entry");
    let unnamed = unnamed_uid(42_001);
    let other = unnamed_uid(unnamed + 1);
    let l = Laptop::new(None);
    // The login user's home is named "ann"; Carol.Smith's uid has no passwd entry.
    let text = |who: &str| {
        format!(r#"{{"mcpServers": {{"{who}-remote": {{"url": "https://{who}-secret@x/sse"}}}}}}"#)
    };
    let p1 = l.put("ann", CURSOR, &text("theirs"));
    let p2 = l.put("Carol.Smith", CURSOR, &text("carols"));
    chown_tree(&l.home("ann"), login_uid);
    chown_tree(&l.home("Carol.Smith"), unnamed);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    assert_eq!(l.fake.status(&p1).unwrap().state, "governed");
    assert_eq!(l.fake.status(&p2).unwrap().state, "governed");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 2, "{ung:?}");
    assert!(
        ung.iter()
            .any(|(_, d)| d.starts_with(&format!("Cursor: {login}: theirs-remote "))),
        "{ung:?}"
    );
    assert!(
        ung.iter()
            .any(|(_, d)| d.starts_with("Cursor: Carol.Smith: carols-remote ")),
        "{ung:?}"
    );
    // A user logged in as "ann" does not see the servers of the home named ann; its owner does.
    let seen = seen_by(&l, other, "ann");
    assert!(!seen.contains("theirs-"), "{seen}");
    assert!(seen_by(&l, login_uid, &login).contains("theirs-remote"));
    // The heartbeat's inventory names the same user.
    let inv = crate::daemon::inventory::mcp(
        l.fake.config.users_root.as_deref(),
        THOTH,
        &[],
        &HostFilter::all(),
        crate::daemon::inventory::MCP_BUDGET,
    );
    let users: Vec<(&str, &str)> = inv
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.user.as_str()))
        .collect();
    assert!(
        users.contains(&("theirs-remote", login.as_str())),
        "{users:?}"
    );
    assert!(
        users.contains(&("carols-remote", "Carol.Smith")),
        "{users:?}"
    );
}
