//! Tool-integrity and DLP cost, in process: `cargo bench -p thoth-proxy --bench integrity`.
//!
//! (a) a `tools/list` result of 100 realistic tools: parsing it alone (what the relay does
//!     anyway) vs. parsing + `thoth_proto::pins::tool_digest` + `integrity::poison::suspicious`
//!     for every tool;
//! (b) a `tools/call` result of 1 KiB / 64 KiB / 1 MiB of text without secrets: the baseline is
//!     what the relay does per result today (`message::classify` on the line and the forward
//!     copy); DLP adds `Scanner::may_match` over the line (default detectors);
//! (c) the same results with one secret near the end: DLP is `may_match`, parsing the result,
//!     `Scanner::redact` and serializing the redacted line.
//!
//! `BENCH_DLP_DETECTORS=aws_access_key,jwt` measures other detectors than the default ones
//! (the secret of (c) is an AWS access key id).
//!
//! Each figure is the median of `BENCH_RUNS` runs (default 21); a run repeats the operation
//! enough times to last about 5 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thoth_policy::{DEFAULT_DLP_DETECTORS, Dlp, DlpArguments, DlpResults};
use thoth_proxy::dlp::{Salt, Scanner};

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(21)
}

/// `BENCH_DLP_DETECTORS=a,b`: other detectors than the default ones.
fn detectors() -> Vec<String> {
    match std::env::var("BENCH_DLP_DETECTORS") {
        Ok(list) if !list.is_empty() => list.split(',').map(str::to_owned).collect(),
        _ => DEFAULT_DLP_DETECTORS.map(str::to_owned).to_vec(),
    }
}

/// Median time of one call of `f`.
fn median(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(50));
    let iters = (Duration::from_millis(5).as_nanos() / once.as_nanos()).clamp(1, 1_000_000) as u32;
    let mut times: Vec<Duration> = (0..runs())
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn tools_list() -> Vec<u8> {
    let tools: Vec<Value> = (0..100)
        .map(|i| {
            json!({
                "name": format!("tool_{i}_{}", ["read_file", "query_db", "create_issue", "send_message"][i % 4]),
                "title": format!("Tool number {i}"),
                "description": format!(
                    "Reads the file at the given path and returns its contents as text. Paths are \
                     relative to the workspace root; symbolic links are followed once. Large files \
                     are truncated to max_bytes. Use list_directory first when unsure (variant {i})."
                ),
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "The file to read, relative to the workspace."},
                        "max_bytes": {"type": "integer", "minimum": 1, "maximum": 10_485_760, "default": 65536},
                        "encoding": {"type": "string", "enum": ["utf-8", "latin-1", "base64"]},
                        "options": {"type": "object", "properties": {"follow_links": {"type": "boolean"}}}
                    },
                    "required": ["path"],
                    "additionalProperties": false
                },
                "annotations": {"readOnlyHint": i % 2 == 0, "destructiveHint": false, "openWorldHint": false}
            })
        })
        .collect();
    let msg = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}});
    let mut line = serde_json::to_vec(&msg).unwrap();
    line.push(b'\n');
    line
}

/// A `tools/call` result line whose text content is about `size` bytes of ordinary prose and
/// code; `secret`: an AWS key pair near the end.
fn result_line(size: usize, secret: bool) -> Vec<u8> {
    const FILLER: &str = "fn handle(req: Request) -> Response { let body = req.body(); \
        // The quick brown fox jumps over the lazy dog, 1234567890 times.\n\
        Lorem ipsum dolor sit amet, consectetur adipiscing elit; see https://example.com/docs?id=42.\n";
    let mut text = String::with_capacity(size + 128);
    while text.len() < size {
        text.push_str(FILLER);
    }
    text.truncate(size);
    if secret {
        let at = size.saturating_sub(200);
        let key = format!("\naws_access_key_id = {}{}\n", "AKIA", "IOSFODNN7EXAMPLE");
        text.replace_range(at..at + key.len(), &key);
    }
    let msg = json!({"jsonrpc": "2.0", "id": 7, "result": {
        "content": [{"type": "text", "text": text}], "isError": false}});
    let mut line = serde_json::to_vec(&msg).unwrap();
    line.push(b'\n');
    line
}

/// What the relay does per result line today: classify it and copy it out.
fn baseline(line: &[u8]) {
    let m = thoth_proxy::message::classify(black_box(line));
    black_box(&m);
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(line);
    black_box(out);
}

fn main() {
    let scanner = Scanner::new(&Dlp {
        arguments: DlpArguments::Warn,
        results: DlpResults::Redact,
        detectors: detectors(),
        allow_patterns: Vec::new(),
    });
    let salt = Salt::random();
    let proxy_added: f64 = std::env::var("BENCH_PROXY_ADDED_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45.0);
    println!("runs per figure: {} (median)", runs());
    let build = median(|| {
        black_box(Scanner::new(&Dlp {
            arguments: DlpArguments::Warn,
            results: DlpResults::Redact,
            detectors: detectors(),
            allow_patterns: Vec::new(),
        }));
    });
    println!(
        "scanner build (once per policy and server): {:.2} ms",
        us(build) / 1000.0
    );

    // (a)
    let list = tools_list();
    let parse = median(|| {
        black_box(serde_json::from_slice::<Value>(black_box(&list)).unwrap());
    });
    let digest_only = median(|| {
        let v: Value = serde_json::from_slice(black_box(&list)).unwrap();
        for tool in v["result"]["tools"].as_array().unwrap() {
            black_box(thoth_proto::pins::tool_digest(tool));
        }
    });
    let digest = median(|| {
        let v: Value = serde_json::from_slice(black_box(&list)).unwrap();
        for tool in v["result"]["tools"].as_array().unwrap() {
            black_box(thoth_proto::pins::tool_digest(tool));
            black_box(thoth_proxy::integrity::poison::suspicious(tool));
        }
    });
    println!("\n(a) tools/list of 100 tools ({} KiB)", list.len() / 1024);
    println!("    parse alone              {:>9.1} µs", us(parse));
    println!(
        "    parse + digest           {:>9.1} µs  (+{:.1} µs, {:.2} µs per tool)",
        us(digest_only),
        us(digest_only) - us(parse),
        (us(digest_only) - us(parse)) / 100.0
    );
    println!(
        "    parse + digest + poison  {:>9.1} µs  (+{:.1} µs, {:.2} µs per tool)",
        us(digest),
        us(digest) - us(parse),
        (us(digest) - us(parse)) / 100.0
    );

    // (b) and (c)
    for secret in [false, true] {
        println!(
            "\n({}) tools/call result, text content, {}",
            if secret { 'c' } else { 'b' },
            if secret {
                "one secret near the end: may_match + parse + redact + serialize"
            } else {
                "no secret: may_match"
            }
        );
        println!(
            "    {:>8} {:>12} {:>12} {:>9} {:>10} {:>11}",
            "size", "baseline µs", "DLP µs", "added %", "DLP MB/s", "of proxy %"
        );
        for size in [1024, 64 * 1024, 1024 * 1024] {
            let line = result_line(size, secret);
            assert_eq!(scanner.may_match(&line), secret, "size {size}");
            let base = median(|| baseline(&line));
            let dlp = if secret {
                median(|| {
                    assert!(scanner.may_match(black_box(&line)));
                    let mut v: Value = serde_json::from_slice(&line).unwrap();
                    let f = scanner.redact(&mut v["result"], "result", &salt);
                    assert_eq!(f.len(), 1);
                    black_box(serde_json::to_vec(&v).unwrap());
                })
            } else {
                median(|| {
                    black_box(scanner.may_match(black_box(&line)));
                })
            };
            let label = match size {
                1024 => "1 KiB".to_owned(),
                s if s < 1 << 20 => format!("{} KiB", s / 1024),
                s => format!("{} MiB", s >> 20),
            };
            println!(
                "    {:>8} {:>12.2} {:>12.2} {:>8.0}% {:>10.0} {:>10.1}%",
                label,
                us(base),
                us(dlp),
                100.0 * us(dlp) / us(base),
                line.len() as f64 / dlp.as_secs_f64() / 1e6,
                100.0 * us(dlp) / proxy_added
            );
        }
    }
    println!(
        "\n'added %': DLP over the relay's own per-result work (baseline). 'of proxy %': DLP over \
         the latency the proxy adds per call, {proxy_added:.0} µs (BENCH_PROXY_ADDED_US; p50 of \
         `--bench proxy` in BENCHMARKS.md); the issue's bound is 20% at 1 KiB."
    );
}
