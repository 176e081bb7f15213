//! MCP stdio framing: one JSON message per line. Reads lines with a size limit; an over-limit
//! line is skipped to its end (never buffered whole) and reported.

use std::io::{self, BufRead};

/// Default limit on one message, in bytes (the issue asks for at least 16 MiB to pass).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// One read from a framed stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line is in the buffer (with its `\n`, unless the stream ended without one).
    Line,
    /// A line longer than the limit was skipped; its length in bytes.
    TooLong(usize),
    /// The stream ended.
    Eof,
}

/// Reads the next line into `buf` (cleared first). Lines that exceed `max` bytes (newline
/// excluded) are consumed and dropped, and reported as [`Frame::TooLong`]. Blank lines are
/// skipped.
pub fn read_frame<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Frame> {
    loop {
        buf.clear();
        let mut skipped: usize = 0;
        let mut too_long = false;
        loop {
            let available = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if too_long {
                    return Ok(Frame::TooLong(skipped));
                }
                return Ok(if buf.is_empty() {
                    Frame::Eof
                } else {
                    Frame::Line
                });
            }
            let (chunk, done) = match memchr_newline(available) {
                Some(i) => (&available[..=i], true),
                None => (available, false),
            };
            let n = chunk.len();
            if too_long {
                skipped += n;
            } else if buf.len() + n > max + usize::from(done) {
                too_long = true;
                skipped = buf.len() + n;
                buf.clear();
                buf.shrink_to(64 * 1024);
            } else {
                buf.extend_from_slice(chunk);
            }
            r.consume(n);
            if done {
                break;
            }
        }
        if too_long {
            return Ok(Frame::TooLong(skipped.saturating_sub(1)));
        }
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        return Ok(Frame::Line);
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], max: usize, cap: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut r = io::BufReader::with_capacity(cap, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_frame(&mut r, &mut buf, max).unwrap() {
                Frame::Line => out.push(Ok(buf.clone())),
                Frame::TooLong(n) => out.push(Err(n)),
                Frame::Eof => return out,
            }
        }
    }

    #[test]
    fn splits_lines_and_keeps_bytes() {
        for cap in [1, 3, 64] {
            let got = frames(b"{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}", 100, cap);
            assert_eq!(
                got,
                vec![
                    Ok(b"{\"a\":1}\n".to_vec()),
                    Ok(b"{\"b\":2}\r\n".to_vec()),
                    Ok(b"{\"c\":3}".to_vec())
                ]
            );
        }
    }

    #[test]
    fn over_limit_lines_are_skipped_and_reading_goes_on() {
        for cap in [1, 4, 1024] {
            let got = frames(b"12345\n123456\n1234567890\n12\n", 6, cap);
            assert_eq!(
                got,
                vec![
                    Ok(b"12345\n".to_vec()),
                    Ok(b"123456\n".to_vec()),
                    Err(10),
                    Ok(b"12\n".to_vec())
                ]
            );
        }
        assert_eq!(frames(b"1234567", 6, 2), vec![Err(7)]);
    }
}
