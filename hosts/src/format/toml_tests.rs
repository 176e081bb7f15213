//! Unit tests of the TOML engine (the corpus and generated configs are in
//! `tests/codex_config.rs`).

use super::*;

fn ctx() -> Ctx<'static> {
    Ctx {
        client: "codex",
        server: None,
    }
}

fn wrap(text: &str) -> Rewritten {
    rewrite(text, "mcp_servers", &Op::wrap("/usr/bin/thoth"), &ctx()).unwrap()
}

fn unwrap(text: &str) -> Rewritten {
    rewrite(text, "mcp_servers", &Op::Unwrap, &ctx()).unwrap()
}

#[test]
fn a_table_entry_is_wrapped_in_place_and_restored() {
    let text = "[mcp_servers.files]\ncommand = 'C:\\npx.cmd' # runner\nargs = [\"-y\", 'srv']\n";
    let w = wrap(text);
    assert_eq!(
        w.text,
        "[mcp_servers.files]\ncommand = \"/usr/bin/thoth\" # runner\nargs = [\"run\", \
         \"--server\", \"files\", \"--client\", \"codex\", \"--\", 'C:\\npx.cmd', \"-y\", \
         'srv']\n"
    );
    assert_eq!(w.report.wrapped, vec!["files"]);
    assert_eq!(unwrap(&w.text).text, text);
}

#[test]
fn one_element_per_line_arrays_get_one_line_per_element() {
    let text =
        "[mcp_servers.a]\r\ncommand = \"npx\"\r\nargs = [\r\n    # pkg\r\n    \"-y\",\r\n]\r\n";
    let w = wrap(text);
    assert!(
        w.text
            .contains("args = [\r\n    # pkg\r\n    \"run\",\r\n    \"--server\",\r\n"),
        "{}",
        w.text
    );
    assert!(!w.text.replace("\r\n", "").contains('\n'));
    assert_eq!(unwrap(&w.text).text, text);
}

#[test]
fn missing_args_are_added_and_removed_exactly() {
    for text in [
        "[mcp_servers.a]\ncommand = \"npx\"\n",
        "[mcp_servers.a]\ncommand = \"npx\"",
        "[mcp_servers.a]\r\n  command = \"npx\" # c\r\nenv = { A = \"1\" }\r\n",
        "mcp_servers.a.command = \"npx\"\nmodel = \"o3\"\n",
        "[mcp_servers]\n\"a b\" . command = \"npx\"\n",
        "mcp_servers = { a = { command = \"npx\", env = { X = \"1\" } } }\n",
        "mcp_servers = { a.command = \"npx\", a.cwd = \"/\" }\n",
        "[mcp_servers]\na = { cwd = \"/\", command = \"npx\" }\n",
    ] {
        let w = wrap(text);
        assert_eq!(
            w.report.wrapped,
            vec![if text.contains("a b") { "a b" } else { "a" }]
        );
        assert!(w.text.contains("\"--no-args\""), "{}", w.text);
        let found = entries(&w.text, "mcp_servers").unwrap();
        assert!(found[0].entry.is_wrapped(), "{}", w.text);
        assert_eq!(unwrap(&w.text).text, text, "{}", w.text);
        assert_eq!(wrap(&w.text).text, w.text);
    }
}

#[test]
fn errors_have_positions_and_shapes_are_refused() {
    match rewrite("a = 1\nb = [\n", "mcp_servers", &Op::Unwrap, &ctx()) {
        Err(ConfigError::Invalid { line, column, .. }) => {
            assert_eq!((line, column), (2, 6));
        }
        other => panic!("{other:?}"),
    }
    match rewrite("a = 1\na = 2\n", "mcp_servers", &Op::Unwrap, &ctx()) {
        Err(ConfigError::Invalid { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rewrite("mcp_servers = 3\n", "mcp_servers", &Op::Unwrap, &ctx()),
        Err(ConfigError::Shape(_))
    ));
    assert_eq!(position("aé\nbc", 6), (2, 3));
}

#[test]
fn args_first_in_an_inline_table_is_refused_on_unwrap() {
    let text = "[mcp_servers]\na = { args = [\"run\", \"--no-args\", \"--\", \"x\"], command = \"/usr/bin/thoth\" }\n";
    let u = unwrap(text);
    assert_eq!(u.text, text);
    assert_eq!(u.report.skipped.len(), 1);
}
