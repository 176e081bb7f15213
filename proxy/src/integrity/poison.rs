//! Signs that a tool definition carries instructions aimed at the model (tool poisoning).
//!
//! Heuristics, not proof: phrase patterns (English only) over the text a model reads of a tool —
//! its name, title and description, the `title`/`description`/`enum` strings anywhere in its
//! input and output schemas, and its annotations' title — plus a scan for invisible and
//! bidirectional characters. A paraphrase, another language or an encoding evades them; an
//! honest description may trip them. The work is bounded whatever the definition's size: at
//! most [`MAX_TEXT`] bytes of text and [`MAX_NODES`] schema values at most [`MAX_DEPTH`] deep
//! are examined, and a definition past those bounds is itself reported (`oversized_definition`).

use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde_json::Value;

/// One reason a definition looks poisoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspicion {
    /// `hidden_instruction_tag`, `ignore_instructions`, `credential_request`,
    /// `cross_tool_instruction`, `concealment`, `invisible_unicode`, `bidi_unicode`,
    /// `long_description`, `oversized_definition`.
    pub kind: &'static str,
    /// A short, escaped excerpt of what matched (at most 120 characters), for the event.
    pub excerpt: String,
}

/// Most bytes of text examined per definition (256 KiB): text past it is not looked at.
pub const MAX_TEXT: usize = 256 * 1024;
/// Most schema values visited per definition.
pub const MAX_NODES: usize = 20_000;
/// Deepest schema nesting walked.
pub const MAX_DEPTH: usize = 64;
/// A description longer than this many characters is reported (`long_description`): room
/// for hidden instructions, and far more than any tool needs.
pub const LONG_DESCRIPTION_CHARS: usize = 4_000;
/// Longest excerpt, in characters.
pub const EXCERPT_CHARS: usize = 120;

/// The phrase kinds, in the order they are reported, each with its patterns (case-insensitive).
const PHRASES: [(&str, &[&str]); 5] = [
    (
        "hidden_instruction_tag",
        &[
            r"<\s*/?\s*(?:important|instructions?|system|secret|hidden|critical|admin|context|ai[_ -]?instructions?|note[_ -]to[_ -](?:ai|assistant|model|llm)|(?:system|user|assistant)[_ -]?(?:prompt|message))\s*(?:\s[^<>]{0,64})?>",
            r"\[\s*/?\s*(?:INST|SYS|SYSTEM)\s*\]",
            r"<<\s*/?\s*SYS\s*>>",
            r"<!--",
            r"<\|[a-z_]{2,24}\|>",
        ],
    ),
    (
        "ignore_instructions",
        &[
            r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:(?:all|any|the|your|of|these|those|every)\s+){0,3}(?:previous|prior|above|earlier|preceding|former|system|original|existing|other|safety)\s+(?:instructions?|prompts?|rules|guidelines|directions|directives|messages|guardrails)",
            r"\b(?:forget|disregard)\s+(?:(?:all|about|everything)\s+){0,2}(?:your|the)\s+(?:instructions|rules|guidelines|system\s+prompt|training)",
            r"\byou\s+are\s+now\s+(?:a|an|acting|operating|in\s+(?:developer|god|admin|debug|jailbreak|unrestricted)\s+mode|dan|free|unrestricted|no\s+longer)\b",
            r"\bnew\s+(?:system\s+)?(?:instructions?|rules|directives?)\s*:",
            r"\bfrom\s+now\s+on,?\s+(?:you|always|never|ignore)\b",
        ],
    ),
    (
        "credential_request",
        &[
            r"~/\.(?:ssh|aws|gnupg|kube|docker|config/gcloud|netrc|npmrc|pgpass|git-credentials|cursor|codeium)\b",
            r"\.ssh/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\bauthorized_keys\b|\.aws/credentials|\.git-credentials|\.docker/config\.json|\.kube/config|/etc/shadow",
            r"\bmcp\.json\b|\bclaude_desktop_config\.json\b|\bmcp_config\.json\b",
            r#"(?:^|[\s'"`(/~])\.env(?:\.local|\.production)?\b"#,
            r"\b(?:read|send|pass|include|provide|share|upload|exfiltrate|attach|forward|transmit|leak|post|append|embed|copy|collect|extract)\b[^.\n]{0,60}?\b(?:api[\s_-]?keys?|access[\s_-]?tokens?|auth(?:entication)?[\s_-]?tokens?|bearer[\s_-]?tokens?|secret[\s_-]?keys?|private[\s_-]?keys?|ssh[\s_-]?keys?|passwords?|passphrases?|credentials|session[\s_-]?cookies?|seed\s+phrases?)\b",
        ],
    ),
    (
        "cross_tool_instruction",
        &[
            r"\bwhen(?:ever)?\s+(?:the\s+user|you|the\s+(?:assistant|model|agent|ai|llm))\s+(?:calls?|uses?|invokes?|runs?|executes?|requests?)\s+(?:the\s+|any\s+|an?\s+)?(?P<other>[\w.-]+)",
            r"\bbefore\s+(?:using|calling|invoking|running|executing)\s+(?:any|every|all|each)\s+(?:other\s+)?(?:tools?|functions?|servers?)",
            r"\b(?:instead\s+of|rather\s+than)\s+(?:using\s+|calling\s+)?(?:the\s+|any\s+)?(?P<other>[\w.-]+)\s+(?:tool|function|server)",
            r"\b(?:the\s+|any\s+)?(?P<other>[\w.-]+)\s+(?:tool|function|server)\s+(?:must|should|has\s+to|needs\s+to|is\s+required\s+to)\b",
            r"\bwhen\s+this\s+tool\s+is\s+(?:available|present|loaded|installed|enabled)",
            r"\b(?:all|every|any)\s+other\s+(?:tools?|functions?|servers?)\b",
            r"\b(?:send|forward|redirect|bcc|cc|route)\s+(?:all|every|any)\s+(?:e-?mails?|messages?|requests?|calls?|payments?|transfers?)\s+(?:to|through|via)\b",
        ],
    ),
    (
        "concealment",
        &[
            r"\b(?:do\s+not|don'?t|never|must\s+not)\s+(?:mention|reveal|disclose|divulge)\b",
            r"\b(?:do\s+not|don'?t|never|must\s+not)\s+(?:tell|inform|notify|alert|show|warn|let)\s+(?:the\s+|your\s+)?(?:user|human|person)",
            r"\bsecretly\b|\bcovertly\b",
            r"\bwithout\s+(?:the\s+)?(?:user|human)(?:'s)?\s+(?:knowing|knowledge|noticing|consent|awareness|seeing|permission)",
            r"\bwithout\s+(?:telling|informing|notifying|alerting|asking)\s+(?:the\s+)?(?:user|human)",
            r"\b(?:hide|conceal)\s+(?:this|it|these|that)\s+from\s+(?:the\s+)?(?:user|human)",
            r"\b(?:the\s+)?user\s+(?:must|should|need)\s+(?:not|never)\s+(?:know|see|notice|find\s+out|be\s+told)",
            r"\bkeep\s+(?:this|it)\s+(?:a\s+)?secret\b",
        ],
    ),
];

/// Words that, captured as `other`, name the tool itself or no tool at all ("the server
/// must…"), not another one.
const SELF_WORDS: [&str; 16] = [
    "this",
    "it",
    "that",
    "same",
    "current",
    "following",
    "above",
    "below",
    "the",
    "a",
    "an",
    "your",
    "our",
    "my",
    "its",
    "their",
];

struct Compiled {
    set: RegexSet,
    /// Per pattern of the set: (index in [`PHRASES`], the pattern alone).
    each: Vec<(usize, Regex)>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let mut sources = Vec::new();
    let mut each = Vec::new();
    for (k, (_, patterns)) in PHRASES.iter().enumerate() {
        for p in *patterns {
            let src = format!("(?i){p}");
            each.push((k, Regex::new(&src).expect("poison pattern")));
            sources.push(src);
        }
    }
    Compiled {
        set: RegexSet::new(&sources).expect("poison patterns"),
        each,
    }
});

/// The reasons a tool definition (one element of a `tools/list` result) looks poisoned, in a
/// fixed order; empty when none.
pub fn suspicious(tool: &Value) -> Vec<Suspicion> {
    let texts = Texts::gather(tool);
    let mut phrase: [Option<String>; PHRASES.len()] = Default::default();
    let mut invisible = None;
    let mut bidi = None;
    let compiled = &*COMPILED;
    for text in &texts.pieces {
        for i in compiled.set.matches(text).iter() {
            let (k, re) = &compiled.each[i];
            if phrase[*k].is_none() {
                phrase[*k] = find(re, text).map(|(s, _)| excerpt(text, s));
            }
        }
        if invisible.is_none() || bidi.is_none() {
            scan_chars(text, &mut invisible, &mut bidi);
        }
    }
    let mut out: Vec<Suspicion> = PHRASES
        .iter()
        .zip(phrase)
        .filter_map(|((kind, _), e)| e.map(|excerpt| Suspicion { kind, excerpt }))
        .collect();
    for (kind, found) in [("invisible_unicode", invisible), ("bidi_unicode", bidi)] {
        if let Some(excerpt) = found {
            out.push(Suspicion { kind, excerpt });
        }
    }
    if let Some(n) = texts
        .description_chars
        .filter(|n| *n > LONG_DESCRIPTION_CHARS)
    {
        out.push(Suspicion {
            kind: "long_description",
            excerpt: format!(
                "description has {}{n} characters (more than {LONG_DESCRIPTION_CHARS})",
                if n > MAX_TEXT { "over " } else { "" },
            ),
        });
    }
    if let Some(why) = texts.cut {
        out.push(Suspicion {
            kind: "oversized_definition",
            excerpt: why.to_owned(),
        });
    }
    out
}

/// The first match of `re` in `text`; for a pattern that captures `other`, the first whose
/// `other` does not name the tool itself ("when you call this…").
fn find(re: &Regex, text: &str) -> Option<(usize, usize)> {
    if re.capture_names().flatten().all(|n| n != "other") {
        return re.find(text).map(|m| (m.start(), m.end()));
    }
    re.captures_iter(text).find_map(|c| {
        let other = c.name("other")?.as_str();
        let whole = c.get(0)?;
        let own = SELF_WORDS.iter().any(|w| other.eq_ignore_ascii_case(w));
        (!own).then(|| (whole.start(), whole.end()))
    })
}

/// The text of a definition a model reads, within the bounds.
struct Texts<'a> {
    pieces: Vec<&'a str>,
    /// Characters of the top-level description (counted up to [`MAX_TEXT`] + 1).
    description_chars: Option<usize>,
    /// Why not everything was examined, if so.
    cut: Option<&'static str>,
    budget: usize,
}

impl<'a> Texts<'a> {
    fn gather(tool: &'a Value) -> Texts<'a> {
        let mut t = Texts {
            pieces: Vec::new(),
            description_chars: None,
            cut: None,
            budget: MAX_TEXT,
        };
        let description = tool.get("description").and_then(Value::as_str);
        t.description_chars = description.map(|d| d.chars().take(MAX_TEXT + 1).count());
        // The short texts first, so a huge description cannot crowd them out.
        for s in [
            tool.get("name").and_then(Value::as_str),
            tool.get("title").and_then(Value::as_str),
            tool.pointer("/annotations/title").and_then(Value::as_str),
            description,
        ]
        .into_iter()
        .flatten()
        {
            t.push(s);
        }
        let mut nodes = 0usize;
        for key in ["inputSchema", "outputSchema"] {
            if let Some(schema) = tool.get(key) {
                t.walk(schema, &mut nodes);
            }
        }
        t
    }

    /// Adds `s`, cut to what is left of the budget.
    fn push(&mut self, s: &'a str) {
        if s.is_empty() {
            return;
        }
        if s.len() > self.budget {
            self.cut = Some("more than 256 KiB of text: the rest was not examined");
            let mut end = self.budget;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.budget = 0;
            if end > 0 {
                self.pieces.push(&s[..end]);
            }
            return;
        }
        self.budget -= s.len();
        self.pieces.push(s);
    }

    /// Depth-first over a schema, without recursion: every string in it (titles, descriptions,
    /// `enum`, `default`, `examples`, `const`, `pattern`, `$comment`…) and every member name
    /// (property names are read by the model too).
    fn walk(&mut self, root: &'a Value, nodes: &mut usize) {
        let mut stack = vec![(root, 0usize)];
        while let Some((v, depth)) = stack.pop() {
            if self.budget == 0 {
                return;
            }
            *nodes += 1;
            if *nodes > MAX_NODES {
                self.cut = Some("schema has more than 20000 values: the rest was not examined");
                return;
            }
            let children: Box<dyn DoubleEndedIterator<Item = &'a Value>> = match v {
                Value::String(s) => {
                    self.push(s);
                    continue;
                }
                Value::Object(map) => {
                    for k in map.keys() {
                        self.push(k);
                    }
                    Box::new(map.values())
                }
                Value::Array(items) => Box::new(items.iter()),
                _ => continue,
            };
            if depth >= MAX_DEPTH {
                self.cut = Some("schema nested more than 64 deep: the rest was not examined");
                continue;
            }
            // Reversed, so members are visited in document order.
            for child in children.rev() {
                if child.is_object() || child.is_array() || child.is_string() {
                    stack.push((child, depth + 1));
                }
            }
        }
    }
}

/// Zero-width and other invisible characters (tag characters hide ASCII text from readers).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
        || (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// Characters that reorder how text is displayed.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Emoji code points a zero-width joiner legitimately follows (👨‍👩‍👧).
fn is_emoji(c: char) -> bool {
    matches!(c, '\u{2600}'..='\u{27BF}' | '\u{1F000}'..='\u{1FAFF}' | '\u{FE0F}')
}

fn scan_chars(text: &str, invisible: &mut Option<String>, bidi: &mut Option<String>) {
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        if invisible.is_none() && is_invisible(c) && !(c == '\u{200D}' && is_emoji(prev)) {
            *invisible = Some(excerpt(text, i));
        }
        if bidi.is_none() && is_bidi(c) {
            *bidi = Some(excerpt(text, i));
        }
        if invisible.is_some() && bidi.is_some() {
            return;
        }
        prev = c;
    }
}

/// A character as shown in an excerpt: control, invisible and bidi characters as `\u{…}`.
fn escaped(c: char, out: &mut String) {
    if c.is_control() || is_invisible(c) || is_bidi(c) || c == '\u{FE0F}' {
        out.push_str(&format!("\\u{{{:x}}}", c as u32));
    } else {
        out.push(c);
    }
}

/// The match at `start` with a little context before it, escaped, at most
/// [`EXCERPT_CHARS`] characters, `…` where cut.
fn excerpt(text: &str, start: usize) -> String {
    const BEFORE: usize = 30;
    // Context before the match, nearest first, up to BEFORE escaped characters.
    let mut before: Vec<String> = Vec::new();
    let mut used = 0;
    let mut cut_before = false;
    for c in text[..start].chars().rev() {
        let mut s = String::new();
        escaped(c, &mut s);
        let n = s.chars().count();
        if used + n > BEFORE {
            cut_before = true;
            break;
        }
        used += n;
        before.push(s);
    }
    let mut out = String::new();
    if cut_before {
        out.push('…');
    }
    for s in before.iter().rev() {
        out.push_str(s);
    }
    let mut count = out.chars().count();
    let mut rest = text[start..].chars().peekable();
    let mut piece = String::new();
    while let Some(c) = rest.next() {
        piece.clear();
        escaped(c, &mut piece);
        let n = piece.chars().count();
        // Keep room for the closing `…` unless this is the last character.
        let room = if rest.peek().is_some() { 1 } else { 0 };
        if count + n + room > EXCERPT_CHARS {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        count += n;
        if count >= EXCERPT_CHARS - 1 && rest.peek().is_some() {
            out.push('…');
            return out;
        }
    }
    out
}

#[cfg(test)]
#[path = "poison_tests.rs"]
mod tests;
