//! A child's stderr, line by line, into `tracing`, without letting the
//! child flood the log: lines are cut at `MAX_LINE` bytes, and beyond
//! `BURST` lines (refilled at `PER_SECOND`) lines are counted, not logged.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

pub(crate) const MAX_LINE: usize = 2048;
const PER_SECOND: f64 = 20.0;
const BURST: f64 = 100.0;

/// Token bucket over log lines.
struct Budget {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            tokens: BURST,
            last: now,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now; `Some(n)` first reports lines
    /// dropped since the last logged one.
    fn take(&mut self, now: Instant) -> (bool, Option<u64>) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(BURST);
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return (false, None);
        }
        self.tokens -= 1.0;
        let dropped = std::mem::take(&mut self.suppressed);
        (true, (dropped > 0).then_some(dropped))
    }
}

/// Reads one line of at most `MAX_LINE` bytes; the rest of a longer line
/// is skipped without being buffered. `None` at end of stream.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut truncated = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok((!line.is_empty() || truncated).then_some(truncated));
        }
        let newline = available.iter().position(|b| *b == b'\n');
        let take = newline.map_or(available.len(), |i| i + 1);
        let room = MAX_LINE.saturating_sub(line.len());
        let chunk = &available[..take.min(room)];
        line.extend_from_slice(chunk);
        truncated |= take > room;
        reader.consume(take);
        if newline.is_some() {
            return Ok(Some(truncated));
        }
    }
}

/// A line as logged: its trailing newline gone, and the secrets the child
/// was given (`secret_env`) replaced, since a child may print its own
/// token (in a debug line, an error echoing its request). A line cut at
/// `MAX_LINE` may end in the first part of a secret, which no longer
/// matches it: that part is replaced too.
fn shown(line: &[u8], secrets: &[String], truncated: bool) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']).to_owned();
    let mut text = crate::scrub::scrub(text, secrets);
    if truncated {
        let cut = secrets
            .iter()
            .filter_map(|secret| secret_begun_at_end(&text, secret))
            .min();
        if let Some(start) = cut {
            text.truncate(start);
            text.push_str(crate::scrub::REDACTED);
        }
    }
    text
}

/// Where `text` ends with the beginning of `secret` (at least
/// `MIN_SECRET_PART` bytes of it; fewer say nothing of a secret).
fn secret_begun_at_end(text: &str, secret: &str) -> Option<usize> {
    const MIN_SECRET_PART: usize = 4;
    (MIN_SECRET_PART..secret.len())
        .rev()
        .filter(|len| secret.is_char_boundary(*len))
        .find(|len| text.ends_with(&secret[..*len]))
        .map(|len| text.len() - len)
}

pub(crate) async fn forward<R: AsyncRead + Unpin>(
    upstream: Arc<str>,
    stderr: R,
    secrets: Vec<String>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(256);
    let mut budget = Budget::new(Instant::now());
    loop {
        let truncated = match read_line(&mut reader, &mut line).await {
            Ok(Some(truncated)) => truncated,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(upstream = %upstream, error = %e, "upstream stderr closed");
                break;
            }
        };
        let (log, dropped) = budget.take(Instant::now());
        if let Some(dropped) = dropped {
            tracing::warn!(upstream = %upstream, dropped, "upstream stderr: lines dropped (rate limit)");
        }
        if log {
            let text = shown(&line, &secrets, truncated);
            tracing::info!(
                target: "gatehouse_upstream::stderr",
                upstream = %upstream,
                truncated,
                "{text}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_secret_the_child_prints_is_not_logged() {
        let secrets = vec!["tok-child-5e2a91c7".to_string()];
        let text = shown(
            b"debug: Authorization: Bearer tok-child-5e2a91c7\r\n",
            &secrets,
            false,
        );
        assert_eq!(text, "debug: Authorization: Bearer [redacted]");
        assert_eq!(shown(b"plain line\n", &secrets, false), "plain line");
    }

    /// A secret that straddles the cut at `MAX_LINE` leaves no part of it.
    #[tokio::test]
    async fn a_secret_cut_with_its_line_is_not_logged_in_part() {
        let secret = "tok-child-5e2a91c7";
        let mut input = vec![b'x'; MAX_LINE - 14];
        input.extend_from_slice(format!("Bearer {secret} more\n").as_bytes());
        let mut reader = BufReader::new(&input[..]);
        let mut line = Vec::new();
        let truncated = read_line(&mut reader, &mut line).await.unwrap().unwrap();
        assert!(truncated);
        let text = shown(&line, &[secret.to_string()], truncated);
        assert!(!text.contains("tok-c"), "{}", &text[text.len() - 40..]);
        assert!(
            text.ends_with("Bearer [redacted]"),
            "{}",
            &text[text.len() - 40..]
        );
        // An untruncated line that happens to end like a secret begins is
        // left alone.
        assert_eq!(
            shown(b"see tok-child\n", &[secret.to_string()], false),
            "see tok-child"
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut_without_buffering_them() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.extend_from_slice(b"\nshort\n");
        let mut reader = BufReader::new(&input[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut reader, &mut line).await.unwrap(), Some(true));
        assert_eq!(line.len(), MAX_LINE);
        assert_eq!(
            read_line(&mut reader, &mut line).await.unwrap(),
            Some(false)
        );
        assert_eq!(line, b"short\n");
        assert_eq!(read_line(&mut reader, &mut line).await.unwrap(), None);
    }

    #[test]
    fn a_flood_is_counted_not_logged() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let logged = (0..1000).filter(|_| budget.take(t0).0).count();
        assert_eq!(logged, BURST as usize);
        // A second later some lines pass again, and the gap is reported.
        let (log, dropped) = budget.take(t0 + Duration::from_secs(1));
        assert!(log);
        assert_eq!(dropped, Some(1000 - BURST as u64));
    }
}
