//! Per-detector tests: true positives (bare, in JSON text, in code) and near misses that must
//! not match. Token-shaped strings are built at run time.

use serde_json::json;
use thoth_policy::DEFAULT_DLP_DETECTORS;

use super::tests::{AWS_ID, AWS_SECRET, all, fake, salt, scanner_with};

/// The detectors that find something in `text` (as a string value), in order.
fn found(text: &str) -> Vec<&'static str> {
    let v = json!({ "text": text });
    let s = all();
    assert!(
        s.may_match(v.to_string().as_bytes()),
        "prefilter missed {text:?}"
    );
    s.find(&v, "result", &salt())
        .into_iter()
        .map(|f| f.detector)
        .collect()
}

/// Asserts that `text` yields exactly one finding of `id`, and that redaction removes `secret`.
fn hit(id: &str, text: &str, secret: &str) {
    assert_eq!(found(text), [id], "in {text:?}");
    let mut v = json!({ "text": text });
    all().redact(&mut v, "result", &salt());
    let out = v["text"].as_str().unwrap();
    assert!(!out.contains(secret), "{out:?} still holds {secret:?}");
    assert!(out.contains(&format!("[REDACTED:{id}]")), "{out:?}");
}

fn miss(text: &str) {
    let v = json!({ "text": text });
    let f = all().find(&v, "result", &salt());
    assert!(f.is_empty(), "{text:?} gave {f:?}");
}

#[test]
fn aws_access_key() {
    hit(
        "aws_access_key",
        &format!("export AWS_ACCESS_KEY_ID={AWS_ID}"),
        AWS_ID,
    );
    let sts = format!("ASIA{}", "Y3FNXQ5KJ7LBMU2Q");
    hit(
        "aws_access_key",
        &format!("{{\"AccessKeyId\": \"{sts}\"}}"),
        &sts,
    );
    miss("AKIAIOSFODNN7EXAMPL and AKIAIOSFODNN7EXAMPLE1 and akiaiosfodnn7example");
    miss("AROADBQP57FF2AEXAMPLE arn:aws:iam::123456789012:role/Admin AIDAJQABLZS4A3QDU576Q");
}

#[test]
fn aws_secret_key() {
    let env = format!("aws_secret_access_key = {AWS_SECRET}");
    hit("aws_secret_key", &env, AWS_SECRET);
    let json = format!("{{\"SecretAccessKey\": \"{AWS_SECRET}\"}}");
    hit("aws_secret_key", &json, AWS_SECRET);
    // Bare, right after an access key id (CSV export, `aws configure` output).
    assert_eq!(
        found(&format!("{AWS_ID},{AWS_SECRET}")),
        ["aws_access_key", "aws_secret_key"]
    );
    // A SHA-1 is not a secret key, even in context.
    let hex = found("aws_secret_access_key = 3f786850e387550fdab836ed7e6dc881de23001b");
    assert!(!hex.contains(&"aws_secret_key"), "{hex:?}");
    miss(&format!("random {AWS_SECRET}x but no context"));
    miss("commit 3f786850e387550fdab836ed7e6dc881de23001b");
}

#[test]
fn gcp_service_account() {
    let key = format!(
        "-----BEGIN PRIVATE KEY-----\\n{}\\n-----END PRIVATE KEY-----\\n",
        fake(64, 11)
    );
    let doc = format!(
        "{{\"type\": \"service_account\", \"project_id\": \"demo\", \"private_key\": \"{key}\", \"client_email\": \"x@demo.iam.gserviceaccount.com\"}}"
    );
    let f = found(&doc);
    assert!(
        f.contains(&"gcp_service_account") && f.contains(&"private_key"),
        "{f:?}"
    );
    miss("{\"type\": \"service_account\", \"client_email\": \"x@demo.iam.gserviceaccount.com\"}");
    let only = scanner_with(&["gcp_service_account"], &[]);
    let v = json!({ "t": doc });
    assert_eq!(only.find(&v, "r", &salt()).len(), 1);
}

#[test]
fn azure_storage_key() {
    let key = format!("{}==", fake(86, 12));
    let cs = format!(
        "DefaultEndpointsProtocol=https;AccountName=demo;AccountKey={key};EndpointSuffix=core.windows.net"
    );
    hit("azure_storage_key", &cs, &key);
    miss("AccountKey=;AccountName=demo");
    miss(&format!("AccountKey={}==", "A".repeat(86)));
}

#[test]
fn github_token() {
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let t = format!("{prefix}{}", fake(36, 13));
        hit("github_token", &format!("token: {t}"), &t);
    }
    let pat = format!("github_pat_{}_{}", fake(22, 14), fake(59, 15));
    hit("github_token", &format!("GH_TOKEN={pat}"), &pat);
    miss("ghp_short and ghp_ plus ghx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
}

#[test]
fn gitlab_token() {
    let t = format!("glpat-{}", fake(20, 16));
    hit("gitlab_token", &format!("curl -H 'PRIVATE-TOKEN: {t}'"), &t);
    miss("glpat-short and glpat-xxxxxxxxxxxxxxxxxxxxxxxxxxxx");
}

#[test]
fn slack_token() {
    let bot = format!(
        "xoxb-{}-{}-{}",
        "123456789012",
        "1234567890123",
        fake(24, 17)
    );
    hit("slack_token", &format!("SLACK_BOT={bot}"), &bot);
    let app = format!("xapp-1-A0123456789-{}", fake(30, 18));
    hit("slack_token", &format!("{app} is the app token"), &app);
    let hook = format!(
        "https://hooks.slack.com/services/T00000000/B00000000/{}",
        fake(24, 19)
    );
    hit("slack_token", &format!("post to {hook}"), &hook);
    miss("xoxo-hugs-and-kisses-12345 and https://hooks.slack.com/ and xoxb-");
}

#[test]
fn stripe_key() {
    for p in ["sk_live_", "rk_live_", "sk_test_"] {
        let k = format!("{p}{}", fake(24, 20));
        hit("stripe_key", &format!("stripe.api_key = '{k}'"), &k);
    }
    // Publishable keys are public.
    miss(&format!("pk_live_{}", fake(24, 21)));
}

#[test]
fn private_key() {
    for kind in ["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "] {
        let body = format!("{}\n{}\n", fake(64, 22), fake(64, 23));
        let pem =
            format!("-----BEGIN {kind}PRIVATE KEY-----\n{body}-----END {kind}PRIVATE KEY-----");
        hit(
            "private_key",
            &format!("cat id_rsa\n{pem}\nok"),
            &body[..64],
        );
    }
    let pgp = format!(
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{}\n-----END PGP PRIVATE KEY BLOCK-----",
        fake(64, 24)
    );
    hit("private_key", &pgp, "BEGIN PGP");
    // Markers in code, public keys and certificates are not private keys.
    miss("if line.startswith('-----BEGIN RSA PRIVATE KEY-----'): return parse(line)");
    miss(&format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
        fake(64, 25)
    ));
    miss(&format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----",
        fake(64, 26)
    ));
}

#[test]
fn jwt() {
    let jwt = [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ]
    .join(".");
    hit("jwt", &format!("Authorization: Bearer {jwt}"), &jwt);
    // Three base64url parts whose header is not a JOSE header.
    miss("eyJub3RoaW5nIjoxfQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV");
    miss("eyJhbGciOiJIUzI1NiJ9.only-two-parts");
}

#[test]
fn connection_string() {
    for url in [
        "postgres://app:S3cretPw9x@db.internal:5432/prod",
        "postgresql://app:S3cretPw9x@10.0.0.5/prod",
        "mysql://root:S3cretPw9x@localhost:3306/shop",
        "mongodb+srv://svc:S3cretPw9x@cluster0.ab1cd.mongodb.net/db",
        "redis://:S3cretPw9x@cache:6379/0",
        "amqp://guest:S3cretPw9x@rabbit:5672/",
        "mssql://sa:S3cretPw9x@sql:1433/db",
    ] {
        hit(
            "connection_string",
            &format!("DATABASE_URL={url}"),
            "S3cretPw9x",
        );
    }
    miss("postgres://user:${DB_PASSWORD}@host/db");
    miss("postgres://user:<password>@host/db and mysql://root:@localhost/db");
    miss("redis://:****@cache:6379 and postgres://localhost/db and postgres://user:password@host");
    miss("https://user:S3cretPw9x@example.com/ is not a database");
}

#[test]
fn generic_secret() {
    hit(
        "generic_secret",
        "password = \"Xk9#mP2$vL7qR4wZ\"",
        "Xk9#mP2$vL7qR4wZ",
    );
    hit(
        "generic_secret",
        "{\"api_key\": \"A9fK2mL8pQ4rT6vX1zB3\"}",
        "A9fK2mL8pQ4rT6vX1zB3",
    );
    hit(
        "generic_secret",
        "DB_PASSWORD=Tr0ub4dor3xyzQw\nDB_HOST=x",
        "Tr0ub4dor3xyzQw",
    );
    hit(
        "generic_secret",
        "client_secret: 9fK2mL8pQ4rT6vX1",
        "9fK2mL8pQ4rT6vX1",
    );
    miss("password = getPassword()");
    miss("token = self.tokenizer.encode(text)");
    miss("password: ${DB_PASSWORD} and secret: {{ secrets.API }} and pwd=<your-password>");
    miss("{\"nextPageToken\": \"CAESBggBEAEYAQ12345abc\", \"max_tokens\": 4096}");
    miss("password=changeme secret: aaaaaaaaaaaaaaaa token=1234567890123456");
    miss("access_key = os.environ.get(\"ACCESS_KEY\")");
    miss("the token is stored in a file; see secret_manager.py for the password policy");
}

#[test]
fn openai_key() {
    let classic = format!("sk-{}", fake(48, 27));
    hit("openai_key", &format!("OPENAI_API_KEY={classic}"), &classic);
    let project = format!("sk-proj-{}", fake(100, 28));
    hit("openai_key", &format!("key: {project}"), &project);
    let anthropic = format!("sk-ant-api03-{}", fake(93, 29));
    hit("openai_key", &format!("x-api-key: {anthropic}"), &anthropic);
    miss("sk-learn is a library; task-1234; risk-assessment-document-for-the-quarter");
    miss(&format!("sk-{}", "abcdefghijklmnopqrstuvwxyzabcdefghijkl"));
}

#[test]
fn card_number() {
    let s = scanner_with(&["card_number"], &[]);
    let find = |t: &str| s.find(&json!({"t": t}), "r", &salt()).len();
    for card in [
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "378282246310005",
        "4111111111111111",
        "3782 822463 10005",
    ] {
        assert_eq!(find(&format!("card {card} exp 12/29")), 1, "{card}");
    }
    for near in [
        "4111 1111 1111 1112",
        "1700000000000",
        "order 1234567890123456",
        "4111 11111 111 1111",
        "4111-1111 1111 1111",
        "3.14159265358979323",
    ] {
        assert_eq!(find(near), 0, "{near}");
    }
    // Not a default detector.
    let defaults = scanner_with(&DEFAULT_DLP_DETECTORS, &[]);
    assert!(
        defaults
            .find(&json!({"t": "card 4111 1111 1111 1111"}), "r", &salt())
            .is_empty()
    );
}

#[test]
fn iban() {
    let s = scanner_with(&["iban"], &[]);
    let find = |t: &str| s.find(&json!({"t": t}), "r", &salt()).len();
    for iban in [
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00 EUR",
    ] {
        assert_eq!(find(&format!("pay to {iban}")), 1, "{iban}");
    }
    for near in [
        "GB82 WEST 1234 5698 7654 33",
        "XX89370400440532013000",
        "DE89 3704 0044 0532 0130",
    ] {
        assert_eq!(find(near), 0, "{near}");
    }
    let mut v = json!({"t": "IBAN: GB82 WEST 1234 5698 7654 32, thanks"});
    s.redact(&mut v, "r", &salt());
    assert_eq!(v["t"], "IBAN: [REDACTED:iban], thanks");
    let defaults = scanner_with(&DEFAULT_DLP_DETECTORS, &[]);
    assert!(
        defaults
            .find(&json!({"t": "GB82 WEST 1234 5698 7654 32"}), "r", &salt())
            .is_empty()
    );
}

#[test]
fn checks() {
    use super::checks::{entropy, iban_ok, is_placeholder, luhn};
    assert!(luhn(b"4111111111111111") && !luhn(b"4111111111111112"));
    assert!(iban_ok(b"GB82WEST12345698765432") && !iban_ok(b"GB82WEST12345698765433"));
    assert!(entropy(b"aaaa") < 0.01 && entropy(b"abcd") > 1.99);
    assert!(is_placeholder(b"${X}") && is_placeholder(b"****") && !is_placeholder(b"S3cretPw9x"));
}
