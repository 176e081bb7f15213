//! Validation run after a detector's expression matched: checksums (Luhn, IBAN mod-97),
//! Shannon entropy, character classes, placeholders, base64url. Pure functions on ASCII text.

/// Shannon entropy of `s` in bits per byte.
pub(super) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// How many of {lowercase, uppercase, digit, other} occur in `s`.
pub(super) fn classes(s: &[u8]) -> usize {
    let (mut lo, mut up, mut di, mut ot) = (false, false, false, false);
    for &b in s {
        match b {
            b'a'..=b'z' => lo = true,
            b'A'..=b'Z' => up = true,
            b'0'..=b'9' => di = true,
            _ => ot = true,
        }
    }
    usize::from(lo) + usize::from(up) + usize::from(di) + usize::from(ot)
}

/// Whether `s` holds both a letter and a digit.
pub(super) fn has_letter_and_digit(s: &[u8]) -> bool {
    s.iter().any(u8::is_ascii_alphabetic) && s.iter().any(u8::is_ascii_digit)
}

/// Whether `s` is only hex digits (a digest, a commit id, a UUID without dashes).
pub(super) fn is_hex(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_hexdigit)
}

/// Values that stand for a secret rather than being one: empty, `${VAR}`, `$VAR`, `{{ x }}`,
/// `<password>`, `%(x)s`, `****`, `xxxx`, and words such as `password` or `changeme`.
pub(super) fn is_placeholder(s: &[u8]) -> bool {
    let Some(&first) = s.first() else {
        return true;
    };
    if matches!(first, b'$' | b'{' | b'<' | b'%' | b'[' | b'(' | b'*') {
        return true;
    }
    if s.ends_with(b"}") || s.ends_with(b">") {
        return true;
    }
    if s.iter().all(|&b| b == first) {
        return true;
    }
    if s.len() >= 3 && s.iter().all(|&b| b == b'x' || b == b'X' || b == b'*') {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    const WORDS: [&[u8]; 16] = [
        b"password",
        b"passwd",
        b"pass",
        b"pwd",
        b"secret",
        b"changeme",
        b"change_me",
        b"example",
        b"mypassword",
        b"yourpassword",
        b"your_password",
        b"your-password",
        b"redacted",
        b"placeholder",
        b"null",
        b"none",
    ];
    WORDS.contains(&lower.as_slice())
        || lower.starts_with(b"your_")
        || lower.starts_with(b"your-")
        || lower.starts_with(b"env:")
        || lower.starts_with(b"process.env")
        || lower.starts_with(b"os.environ")
}

/// Luhn check over ASCII digits (other bytes ignored).
pub(super) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    let mut n = 0;
    for &b in digits.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
        n += 1;
    }
    n > 0 && sum.is_multiple_of(10)
}

/// Whether a card number (digits only) has the length of a known issuer for its prefix
/// (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro).
pub(super) fn card_issuer_ok(d: &[u8]) -> bool {
    let len = d.len();
    let p = |n: usize| -> u32 {
        d[..n.min(len)]
            .iter()
            .fold(0, |a, &b| a * 10 + u32::from(b - b'0'))
    };
    match d.first() {
        Some(b'4') => matches!(len, 13 | 16 | 19),
        Some(b'5') => (51..=55).contains(&p(2)) && len == 16 || p(2) == 50 && len >= 12,
        Some(b'2') => (2221..=2720).contains(&p(4)) && len == 16,
        Some(b'3') => {
            (matches!(p(2), 34 | 37) && len == 15)
                || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&len))
                || (((300..=305).contains(&p(3)) || matches!(p(2), 36 | 38)) && len == 14)
        }
        Some(b'6') => {
            (p(4) == 6011 || (644..=649).contains(&p(3)) || p(2) == 65 || p(2) == 62)
                && (16..=19).contains(&len)
                || (56..=69).contains(&p(2)) && (12..=19).contains(&len)
        }
        _ => false,
    }
}

/// The length of an IBAN for the common countries (ISO 13616 registry); `None` for others.
fn iban_length(country: &[u8]) -> Option<usize> {
    const LENGTHS: [(&[u8; 2], usize); 40] = [
        (b"AD", 24),
        (b"AE", 23),
        (b"AT", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BR", 29),
        (b"CH", 21),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DK", 18),
        (b"EE", 20),
        (b"ES", 24),
        (b"FI", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GR", 27),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"MC", 27),
        (b"MT", 31),
        (b"NL", 18),
        (b"NO", 15),
        (b"PL", 28),
        (b"PT", 25),
        (b"RO", 24),
        (b"SA", 24),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"TR", 26),
    ];
    LENGTHS
        .iter()
        .find(|(c, _)| c.as_slice() == country)
        .map(|&(_, n)| n)
}

/// IBAN check: a known country, its length, and the ISO 7064 mod-97 checksum (== 1). `s` is the
/// IBAN without separators, uppercase.
pub(super) fn iban_ok(s: &[u8]) -> bool {
    if s.len() < 15 || s.len() > 34 {
        return false;
    }
    if iban_length(&s[..2]) != Some(s.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in s[4..].iter().chain(&s[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Decodes base64url (or standard base64) without padding; `None` when not base64.
pub(super) fn base64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in s {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
