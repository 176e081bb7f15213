//! Random JSON and JSONC configs for each JSON host's files, in every layout people and
//! editors write: inline or one item per line, comments (JSONC) before keys, after values and
//! after commas, trailing commas (JSONC), escapes, BOM and CRLF.

use std::path::Path;

use thoth_hosts::host::Host;

use super::common::{Rng, endings_and_bom};
use super::jsonc;

/// A JSON/JSONC value as text, made with random layout: inline or one item per line, comments
/// (JSONC) before keys, after values and after commas, trailing commas (JSONC).
enum J {
    /// A raw literal (string with its escapes, number, true…).
    Raw(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn s(raw: &str) -> J {
    J::Raw(raw.to_owned())
}

struct Writer<'r> {
    r: &'r mut Rng,
    jsonc: bool,
    indent: &'static str,
}

impl Writer<'_> {
    fn block_comment(&mut self) -> String {
        let c = self
            .r
            .pick(&["/* c */", "/**/", "/* \"command\": \"x\", */", "/* é 🚀 */"]);
        c.to_owned()
    }
    /// Space after a token on an inline line (maybe a block comment).
    fn gap(&mut self) -> String {
        if self.jsonc && self.r.chance(6) {
            format!(" {} ", self.block_comment())
        } else if self.r.chance(2) {
            " ".into()
        } else {
            String::new()
        }
    }
    /// A line break to `depth` (maybe preceded by a line comment or a blank line).
    fn newline(&mut self, depth: usize) -> String {
        let mut out = String::new();
        if self.jsonc && self.r.chance(6) {
            out.push_str(self.r.pick(&[" // note", " // \"args\": [\"--\"]", " //"]));
        }
        out.push('\n');
        if self.r.chance(12) {
            out.push('\n');
        }
        if self.jsonc && self.r.chance(10) {
            out.push_str(&self.indent.repeat(depth));
            out.push_str("// a whole-line comment\n");
        }
        out.push_str(&self.indent.repeat(depth));
        out
    }
    fn write(&mut self, j: &J, depth: usize, out: &mut String) {
        match j {
            J::Raw(r) => out.push_str(r),
            J::Arr(items) => {
                let multi = !items.is_empty() && self.r.chance(3);
                self.seq('[', ']', items.len(), multi, depth, out, |w, i, out| {
                    w.write(&items[i], depth + 1, out)
                });
            }
            J::Obj(props) => {
                let multi = !props.is_empty() && !self.r.chance(4);
                self.seq('{', '}', props.len(), multi, depth, out, |w, i, out| {
                    let (k, v) = &props[i];
                    out.push_str(k);
                    out.push(':');
                    let g = w.gap();
                    out.push_str(if g.is_empty() { " " } else { &g });
                    w.write(v, depth + 1, out);
                });
            }
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn seq(
        &mut self,
        open: char,
        close: char,
        n: usize,
        multi: bool,
        depth: usize,
        out: &mut String,
        mut item: impl FnMut(&mut Self, usize, &mut String),
    ) {
        out.push(open);
        if n == 0 {
            if self.jsonc && self.r.chance(4) {
                let c = self.block_comment();
                out.push_str(&c);
            }
            out.push(close);
            return;
        }
        for i in 0..n {
            if multi {
                let nl = self.newline(depth + 1);
                out.push_str(&nl);
            } else if i > 0 || self.r.chance(3) {
                let g = self.gap();
                out.push_str(&g);
            }
            if self.jsonc && multi && self.r.chance(8) {
                let c = self.block_comment();
                out.push_str(&c);
                out.push(' ');
            }
            item(self, i, out);
            if i + 1 < n || (self.jsonc && self.r.chance(3)) {
                if self.jsonc && self.r.chance(8) {
                    let c = self.block_comment();
                    out.push(' ');
                    out.push_str(&c);
                }
                out.push(',');
            }
        }
        if multi {
            let nl = self.newline(depth);
            out.push_str(&nl);
        } else if self.r.chance(3) {
            out.push(' ');
        }
        out.push(close);
    }
}

const COMMANDS: [&str; 10] = [
    "\"npx\"",
    "\"\\u006e\\u0070\\u0078\"",
    "\"C:\\\\tools\\\\srv.exe\"",
    "\"/opt/mcp/bin/server\"",
    "\"uvx\"",
    "\"/Users/zoë/Документы/项目/mcp\"",
    "\"docker\"",
    "\"node\"",
    "\"with \\\"quotes\\\" and \\t tab\"",
    "\"\\/usr\\/bin\\/escaped-slash\"",
];
const ARGS: [&str; 9] = [
    "\"-y\"",
    "\"@modelcontextprotocol/server-filesystem\"",
    "\"${workspaceFolder}\"",
    "\"--\"",
    "\"run\"",
    "\"C:\\\\Users\\\\Ann\\\\\"",
    "\"🚀\"",
    "\"\"",
    "\"--flag=\\u0041\"",
];

fn server(r: &mut Rng, vscode: bool, windsurf: bool) -> J {
    let mut props: Vec<(String, J)> = Vec::new();
    match r.below(10) {
        0 => {
            props.push(("\"type\"".into(), s(r.pick(&["\"http\"", "\"sse\""]))));
            let key = if windsurf { "\"serverUrl\"" } else { "\"url\"" };
            props.push((key.into(), s("\"https://mcp.example.com/mcp\"")));
            if r.chance(2) {
                props.push((
                    "\"headers\"".into(),
                    J::Obj(vec![(
                        "\"Authorization\"".into(),
                        s("\"Bearer ${input:t}\""),
                    )]),
                ));
            }
        }
        1 => props.push(("\"url\"".into(), s("\"http://localhost:8931/sse\""))),
        _ => {
            if vscode || r.chance(3) {
                props.push(("\"type\"".into(), s("\"stdio\"")));
            }
            props.push(("\"command\"".into(), s(r.pick(&COMMANDS))));
            if !r.chance(4) {
                let args = (0..r.below(5)).map(|_| s(r.pick(&ARGS))).collect();
                props.push(("\"args\"".into(), J::Arr(args)));
            }
            if r.chance(3) {
                props.push((
                    "\"env\"".into(),
                    J::Obj(vec![("\"TOKEN\"".into(), s("\"s3cr\\u00e9t\""))]),
                ));
            }
            if r.chance(5) {
                props.push(("\"disabled\"".into(), s("true")));
            }
            if vscode && r.chance(4) {
                props.push(("\"envFile\"".into(), s("\"${workspaceFolder}/.env\"")));
            }
            // Key order is the user's: shuffle.
            for i in (1..props.len()).rev() {
                let j = r.below(i as u64 + 1) as usize;
                props.swap(i, j);
            }
        }
    }
    J::Obj(props)
}

fn servers(r: &mut Rng, vscode: bool, windsurf: bool) -> J {
    let names = [
        "\"files\"",
        "\"git\"",
        "\"données\"",
        "\"a.b\"",
        "\"\\u0066etch\"",
        "\"x y\"",
    ];
    let n = r.below(5) as usize;
    J::Obj(
        names[..n]
            .iter()
            .map(|k| ((*k).to_owned(), server(r, vscode, windsurf)))
            .collect(),
    )
}

/// A random config for `logical` (a host's file name), as text.
pub(crate) fn random_config(r: &mut Rng, host: &dyn Host, logical: &str) -> String {
    let path = Path::new(logical);
    let jsonc = jsonc(&host.format(path));
    let windsurf = host.id() == "windsurf";
    let mut top: Vec<(String, J)> = Vec::new();
    let filler = |r: &mut Rng| -> (String, J) {
        match r.below(4) {
            0 => ("\"numStartups\"".into(), s("187")),
            1 => ("\"editor.rulers\"".into(), J::Arr(vec![s("100"), s("120")])),
            2 => (
                "\"history\"".into(),
                J::Arr(vec![J::Obj(vec![(
                    "\"display\"".into(),
                    s("\"/mcp \\\"servers\\\"\""),
                )])]),
            ),
            _ => ("\"theme\"".into(), s("\"dark\"")),
        }
    };
    for _ in 0..r.below(3) {
        top.push(filler(r));
    }
    match (host.id(), logical) {
        ("vscode", "settings.json") => {
            let mut mcp = vec![("\"servers\"".into(), servers(r, true, false))];
            if r.chance(2) {
                mcp.insert(0, ("\"inputs\"".into(), J::Arr(Vec::new())));
            }
            top.push(("\"mcp\"".into(), J::Obj(mcp)));
            if r.chance(2) {
                // Not VS Code's: a top-level "servers" in settings.json.
                top.push(("\"servers\"".into(), servers(r, true, false)));
            }
        }
        ("vscode", _) => {
            if r.chance(2) {
                top.push((
                    "\"inputs\"".into(),
                    J::Arr(vec![J::Obj(vec![
                        ("\"type\"".into(), s("\"promptString\"")),
                        ("\"id\"".into(), s("\"t\"")),
                        ("\"password\"".into(), s("true")),
                    ])]),
                ));
            }
            top.push(("\"servers\"".into(), servers(r, true, false)));
        }
        ("claude-code", ".claude.json") => {
            if r.chance(4) {
                top.push(("\"mcpServers\"".into(), servers(r, false, false)));
            }
            let keys = [
                "\"/home/ann/src/thoth\"",
                "\"/home/ann/a b\"",
                "\"C:\\\\Users\\\\Ann\\\\p\"",
                "\"/tmp/\\u00e9\"",
                "\"\"",
            ];
            let mut projects = Vec::new();
            for k in &keys[..r.below(6) as usize] {
                let mut p = vec![(
                    "\"allowedTools\"".into(),
                    J::Arr(vec![s("\"Bash(cargo test:*)\"")]),
                )];
                match r.below(6) {
                    0 => p.push(("\"mcpServers\"".into(), J::Arr(Vec::new()))),
                    1 => {}
                    _ => p.push(("\"mcpServers\"".into(), servers(r, false, false))),
                }
                if r.chance(3) {
                    p.push((
                        "\"disabledMcpServers\"".into(),
                        J::Arr(vec![s("\"files\"")]),
                    ));
                }
                if r.chance(4) {
                    // Nested projects are not Claude Code's: never read.
                    p.push((
                        "\"projects\"".into(),
                        J::Obj(vec![(
                            "\"/x\"".into(),
                            J::Obj(vec![("\"mcpServers\"".into(), servers(r, false, false))]),
                        )]),
                    ));
                }
                projects.push(((*k).to_owned(), J::Obj(p)));
            }
            top.push(("\"projects\"".into(), J::Obj(projects)));
            if r.chance(2) {
                top.push(("\"mcpServers\"".into(), servers(r, false, false)));
            }
        }
        _ => top.push(("\"mcpServers\"".into(), servers(r, false, windsurf))),
    }
    for _ in 0..r.below(2) {
        top.push(filler(r));
    }
    let indent = r.pick(&["  ", "\t", "    "]);
    let mut text = String::new();
    if jsonc && r.chance(4) {
        text.push_str("// Generated.\n");
    }
    Writer { r, jsonc, indent }.write(&J::Obj(top), 0, &mut text);
    if r.chance(2) {
        text.push('\n');
    }
    endings_and_bom(r, text)
}
