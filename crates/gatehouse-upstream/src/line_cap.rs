//! A size cap on the messages a child writes to stdout.
//!
//! rmcp's stdio transport bounds a line, but it drops an oversized line
//! silently, so the call it answered would wait for its timeout. This reader
//! sits between the child and rmcp: a line longer than the limit is cut off
//! (rmcp then sees an unparsable fragment and ignores it), the rest is
//! discarded without being buffered, and in its place rmcp receives a
//! JSON-RPC error for the same request id, which the client turns into
//! [`UpstreamError::MessageTooLarge`](crate::UpstreamError::MessageTooLarge).
//!
//! The id is taken from the start of the line (servers that write `"id"`
//! before `"result"`, like the Python SDK) or from its end (like the
//! TypeScript SDK). Without one the call ends at its timeout instead.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// JSON-RPC code of the synthesised error (implementation-defined range).
/// Never sent on the wire; recognised together with [`TOO_LARGE_MARKER`].
pub(crate) const TOO_LARGE_CODE: i32 = -32019;
/// Key in the error's `data` that marks it as ours.
pub(crate) const TOO_LARGE_MARKER: &str = "gatehouse_message_too_large";

const HEAD: usize = 512;
const TAIL: usize = 256;
const SCRATCH: usize = 16 * 1024;

pub(crate) struct LineCap<R> {
    inner: R,
    limit: usize,
    line_len: usize,
    discarding: bool,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    out: Vec<u8>,
    out_pos: usize,
    scratch: Vec<u8>,
}

impl<R> LineCap<R> {
    pub(crate) fn new(inner: R, limit: usize) -> LineCap<R> {
        LineCap {
            inner,
            limit,
            line_len: 0,
            discarding: false,
            head: Vec::with_capacity(HEAD),
            tail: VecDeque::with_capacity(TAIL),
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; SCRATCH],
        }
    }

    fn capture_head(&mut self, bytes: &[u8]) {
        let room = HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn capture_tail(&mut self, bytes: &[u8]) {
        let keep = &bytes[bytes.len().saturating_sub(TAIL)..];
        while self.tail.len() + keep.len() > TAIL {
            self.tail.pop_front();
        }
        self.tail.extend(keep);
    }

    fn process(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let newline = rest.iter().position(|b| *b == b'\n');
            let end = newline.map_or(rest.len(), |i| i + 1);
            let content = &rest[..newline.unwrap_or(end)];
            if self.discarding {
                self.capture_tail(content);
            } else {
                let room = self.limit - self.line_len;
                if content.len() > room {
                    self.capture_head(&content[..room]);
                    // End the fragment rmcp already has: it fails to parse
                    // and is skipped.
                    self.out.push(b'\n');
                    self.discarding = true;
                    self.capture_tail(&content[room..]);
                } else {
                    self.capture_head(content);
                    self.out.extend_from_slice(&rest[..end]);
                    self.line_len += content.len();
                }
            }
            if newline.is_some() {
                if self.discarding {
                    self.finish_oversized();
                }
                self.line_len = 0;
                self.head.clear();
            }
            rest = &rest[end..];
        }
    }

    fn finish_oversized(&mut self) {
        let tail: Vec<u8> = self.tail.drain(..).collect();
        let id = id_at_start(&self.head).or_else(|| id_at_end(&tail));
        tracing::warn!(
            limit = self.limit,
            answered_request = id.as_deref().unwrap_or("unknown"),
            "upstream message exceeded the size limit and was dropped"
        );
        if let Some(id) = id {
            let line = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{{\"code\":{TOO_LARGE_CODE},\"message\":\"message too large\",\"data\":{{\"{TOO_LARGE_MARKER}\":{}}}}}}}\n",
                self.limit
            );
            self.out.extend_from_slice(line.as_bytes());
        }
        self.discarding = false;
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineCap<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut scratch = std::mem::take(&mut this.scratch);
            let mut read = ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let n = read.filled().len();
            if let Poll::Ready(Ok(())) = polled {
                this.process(&scratch[..n]);
            }
            this.scratch = scratch;
            ready!(polled)?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// A JSON-RPC id (number or simple string) as JSON text, if `raw` is one.
fn valid_id(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let number = !text.is_empty()
        && text
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
        && text != "-";
    let string = text.len() >= 2
        && text.starts_with('"')
        && text.ends_with('"')
        && !text[1..text.len() - 1].contains(['"', '\\'])
        && !text.chars().any(char::is_control);
    (number || string).then(|| text.to_owned())
}

/// The top-level `"id"` among the first bytes of a line.
fn id_at_start(head: &[u8]) -> Option<String> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < head.len() && head[j] != b'"' {
                    if head[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j >= head.len() {
                    return None;
                }
                let is_key_id = depth == 1 && &head[start..j] == b"id";
                i = j + 1;
                while i < head.len() && head[i].is_ascii_whitespace() {
                    i += 1;
                }
                if is_key_id && head.get(i) == Some(&b':') {
                    let mut v = i + 1;
                    while v < head.len() && head[v].is_ascii_whitespace() {
                        v += 1;
                    }
                    let value_end = if head.get(v) == Some(&b'"') {
                        head[v + 1..].iter().position(|b| *b == b'"')? + v + 2
                    } else {
                        head[v..]
                            .iter()
                            .position(|b| !(b.is_ascii_digit() || *b == b'-'))?
                            + v
                    };
                    return valid_id(&head[v..value_end]);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `…,"id":VALUE}` at the very end of a line.
fn id_at_end(tail: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(tail).ok()?.trim_end();
    let text = text.strip_suffix('}')?.trim_end();
    let value_start = match text.strip_suffix('"') {
        Some(inside) => inside.rfind('"')?,
        None => text.rfind(|c: char| !(c.is_ascii_digit() || c == '-'))? + 1,
    };
    let value = &text[value_start..];
    let before = text[..value_start].trim_end().strip_suffix(':')?.trim_end();
    let before = before.strip_suffix("\"id\"")?.trim_end();
    if !(before.ends_with(',') || before.ends_with('{')) {
        return None;
    }
    valid_id(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn run(input: Vec<u8>, limit: usize) -> String {
        let mut reader = LineCap::new(&input[..], limit);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn small_lines_pass_unchanged() {
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n{\"a\":2}\n".to_vec();
        assert_eq!(
            run(input.clone(), 1024).await,
            String::from_utf8(input).unwrap()
        );
    }

    #[tokio::test]
    async fn an_oversized_answer_becomes_an_error_for_its_id() {
        let big = "x".repeat(100_000);
        let input = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{{\"text\":\"{big}\"}}}}\n{{\"after\":1}}\n"
        );
        let out = run(input.into_bytes(), 1024).await;
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].len() <= 1024);
        let error: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(error["id"], 7);
        assert_eq!(error["error"]["code"], TOO_LARGE_CODE);
        assert_eq!(lines[2], "{\"after\":1}");
        assert!(out.len() < 2048);
    }

    #[tokio::test]
    async fn the_id_is_found_at_the_end_too() {
        let big = "y".repeat(50_000);
        let input = format!(
            "{{\"result\":{{\"content\":[{{\"id\":99,\"text\":\"{big}\"}}]}},\"jsonrpc\":\"2.0\",\"id\":\"req-3\"}}\n"
        );
        let out = run(input.into_bytes(), 4096).await;
        let last = out.lines().last().unwrap();
        let error: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(error["id"], "req-3");
    }

    #[test]
    fn nested_ids_are_not_mistaken_for_the_request_id() {
        assert_eq!(id_at_start(br#"{"result":{"id":5,"x""#), None);
        assert_eq!(
            id_at_start(br#"{"jsonrpc":"2.0","id":12,"result":"#).as_deref(),
            Some("12")
        );
        assert_eq!(id_at_end(br#"x","y":{"id":3}}"#), None);
        assert_eq!(
            id_at_end(br#"x"},"jsonrpc":"2.0","id":3}"#).as_deref(),
            Some("3")
        );
    }
}
