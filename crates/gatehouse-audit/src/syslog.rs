//! The syslog sink: every audit record as an RFC 5424 message, for SIEMs.
//!
//! Over UDP (RFC 5426: one message per datagram, best effort: a datagram
//! can be lost without anyone knowing, so UDP is for collectors on the same
//! host or network) or TCP (RFC 6587 octet-counting framing). Over TCP a
//! batch counts as written once the kernel took every byte; a receiver that
//! is down, refuses or stalls fails the batch, so the calls waiting for it
//! are refused (back-pressure) rather than answered without their records.
//! A closed or broken connection is opened again with the next batch.
//! Plain syslog has no acknowledgement: records the receiver's kernel took
//! just before the receiver died are lost to it (the database and the file
//! keep them); RELP would be needed to know.
//!
//! The message is the record as the JSON-lines file has it (link included),
//! so a SIEM can verify the chain too: `<PRI>1 TIMESTAMP HOST gatehouse PID
//! KIND - BOM{json}`.

use std::time::Duration;

use gatehouse_core::{AuditEvent, AuditKind, Outcome};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::AuditError;

/// How long a write (or a connection) may take before the batch fails.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest datagram sent; a larger record is sent without its
/// arguments (marked `"arguments_truncated": true`).
const MAX_DATAGRAM: usize = 60 * 1024;
/// RFC 5424 §6.4: a UTF-8 MSG starts with the byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    Udp(String),
    Tcp(String),
}

impl SyslogTarget {
    /// `udp://host:port` or `tcp://host:port`.
    pub fn parse(address: &str) -> Result<SyslogTarget, String> {
        let (scheme, rest) = address
            .split_once("://")
            .ok_or_else(|| format!("{address:?}: expected udp://host:port or tcp://host:port"))?;
        if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
            return Err(format!("{address:?}: expected host:port after {scheme}://"));
        }
        match scheme {
            "udp" => Ok(SyslogTarget::Udp(rest.to_string())),
            "tcp" => Ok(SyslogTarget::Tcp(rest.to_string())),
            _ => Err(format!(
                "{address:?}: the scheme must be udp or tcp (tls is not supported yet)"
            )),
        }
    }
}

/// The sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    pub target: SyslogTarget,
    /// 0–23; 13 is "log audit".
    pub facility: u8,
    pub app_name: String,
    /// The HOSTNAME field (the machine's name when not configured).
    pub hostname: String,
}

pub(crate) struct SyslogSink {
    settings: SyslogSettings,
    pid: u32,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
}

#[derive(Serialize)]
struct Message<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a AuditEvent,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    arguments_truncated: bool,
}

/// RFC 5424 severity: refusals and failures are warnings, anomalies
/// errors, alerts "alert" (action must be taken immediately).
fn severity(event: &AuditEvent) -> u8 {
    match (event.kind, event.outcome) {
        (AuditKind::Alert, _) => 1,
        (AuditKind::Anomaly, _) => 3,
        (_, Outcome::Success) => 6,
        _ => 4,
    }
}

/// PRINTUSASCII without spaces, at most `max` bytes; "-" when empty.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// The machine's name for the HOSTNAME field.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl SyslogSink {
    pub(crate) fn new(settings: SyslogSettings) -> SyslogSink {
        SyslogSink {
            settings,
            pid: std::process::id(),
            udp: None,
            tcp: None,
        }
    }

    /// One RFC 5424 message (without transport framing).
    fn message(&self, event: &AuditEvent, truncate: bool) -> Result<Vec<u8>, AuditError> {
        let pri = u16::from(self.settings.facility) * 8 + u16::from(severity(event));
        let mut out = format!(
            "<{pri}>1 {} {} {} {} {} - ",
            event.ts.to_rfc3339(),
            header_field(&self.settings.hostname, 255),
            header_field(&self.settings.app_name, 48),
            self.pid,
            event.kind.as_str(),
        )
        .into_bytes();
        out.extend_from_slice(BOM);
        let stripped;
        let body = if truncate && event.arguments.is_some() {
            stripped = AuditEvent {
                arguments: None,
                ..event.clone()
            };
            &stripped
        } else {
            event
        };
        let message = Message {
            time: event.ts.to_rfc3339(),
            event: body,
            arguments_truncated: truncate && event.arguments.is_some(),
        };
        serde_json::to_writer(&mut out, &message)
            .map_err(|e| AuditError::WriteFailed(format!("syslog: {e}")))?;
        Ok(out)
    }

    /// A batch's messages, ready to send: rendered before the sinks are
    /// written concurrently, so the records need not be copied.
    pub(crate) fn render(&self, batch: &[AuditEvent]) -> Result<Rendered, AuditError> {
        match self.settings.target {
            SyslogTarget::Udp(_) => {
                let mut datagrams = Vec::with_capacity(batch.len());
                for event in batch {
                    let mut message = self.message(event, false)?;
                    if message.len() > MAX_DATAGRAM {
                        message = self.message(event, true)?;
                    }
                    datagrams.push(message);
                }
                Ok(Rendered::Datagrams(datagrams))
            }
            SyslogTarget::Tcp(_) => {
                let mut framed = Vec::with_capacity(batch.len() * 512);
                for event in batch {
                    let message = self.message(event, false)?;
                    framed.extend_from_slice(format!("{} ", message.len()).as_bytes());
                    framed.extend_from_slice(&message);
                }
                Ok(Rendered::Stream(framed))
            }
        }
    }

    /// Sends a rendered batch, in order.
    pub(crate) async fn send(&mut self, rendered: Rendered) -> Result<(), AuditError> {
        let failed = |e: std::io::Error| AuditError::WriteFailed(format!("syslog: {e}"));
        match (self.settings.target.clone(), rendered) {
            (SyslogTarget::Udp(address), Rendered::Datagrams(datagrams)) => {
                if datagrams.is_empty() {
                    return Ok(());
                }
                if self.udp.is_none() {
                    let bind = if address.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    };
                    let socket = UdpSocket::bind(bind).await.map_err(failed)?;
                    socket.connect(&address).await.map_err(failed)?;
                    self.udp = Some(socket);
                }
                for message in datagrams {
                    if let Some(socket) = &self.udp
                        && let Err(e) = socket.send(&message).await
                    {
                        self.udp = None;
                        return Err(failed(e));
                    }
                }
                Ok(())
            }
            (SyslogTarget::Tcp(address), Rendered::Stream(framed)) => {
                if framed.is_empty() {
                    return Ok(());
                }
                // A receiver that went away since the last batch has closed
                // the connection; the kernel would still take one write on
                // it and lose it. The receiver never sends, so anything to
                // read (end of stream, an error) means: connect again.
                if let Some(stream) = &self.tcp
                    && !matches!(stream.try_read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                {
                    self.tcp = None;
                }
                let result = tokio::time::timeout(WRITE_TIMEOUT, async {
                    if self.tcp.is_none() {
                        let stream = TcpStream::connect(&address).await?;
                        stream.set_nodelay(true)?;
                        self.tcp = Some(stream);
                    }
                    match &mut self.tcp {
                        Some(stream) => {
                            stream.write_all(&framed).await?;
                            stream.flush().await
                        }
                        None => Ok(()),
                    }
                })
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the receiver did not take the records in time",
                    ))
                });
                if let Err(e) = result {
                    // A part of the batch may have been sent: the receiver
                    // may see some records twice after the retry, never
                    // fewer.
                    self.tcp = None;
                    return Err(failed(e));
                }
                Ok(())
            }
            _ => Err(AuditError::WriteFailed(
                "syslog: a batch rendered for another transport".into(),
            )),
        }
    }

    /// Renders and sends (tests).
    #[cfg(test)]
    async fn write(&mut self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        let rendered = self.render(batch)?;
        self.send(rendered).await
    }
}

/// A batch's messages for one transport.
pub(crate) enum Rendered {
    Datagrams(Vec<Vec<u8>>),
    Stream(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventBuilder;
    use gatehouse_core::Timestamp;
    use tokio::io::AsyncReadExt;

    fn settings(target: SyslogTarget) -> SyslogSettings {
        SyslogSettings {
            target,
            facility: 13,
            app_name: "gatehouse".into(),
            hostname: "gate house\n1".into(),
        }
    }

    fn denied() -> AuditEvent {
        EventBuilder::new(AuditKind::ToolDecision, Outcome::Denied, Timestamp(1_000))
            .tool("web_fetch")
            .reason("role_not_allowed")
            .build()
    }

    #[test]
    fn addresses_name_their_transport() {
        assert_eq!(
            SyslogTarget::parse("udp://127.0.0.1:514"),
            Ok(SyslogTarget::Udp("127.0.0.1:514".into()))
        );
        assert_eq!(
            SyslogTarget::parse("tcp://siem.example:601"),
            Ok(SyslogTarget::Tcp("siem.example:601".into()))
        );
        for bad in [
            "siem:514",
            "http://siem:514",
            "tcp://",
            "udp://siem",
            "tcp://a:1/x",
        ] {
            assert!(SyslogTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_is_rfc_5424_with_the_record_as_json() {
        let sink = SyslogSink::new(settings(SyslogTarget::Udp("127.0.0.1:9".into())));
        let message = sink.message(&denied(), false).unwrap();
        let text = String::from_utf8(message).unwrap();
        // facility 13 × 8 + warning (4) = 108; the host name without its
        // space and newline.
        let prefix = format!(
            "<108>1 1970-01-01T00:00:01.000Z gatehouse1 gatehouse {} tool_decision - \u{feff}",
            std::process::id()
        );
        assert!(text.starts_with(&prefix), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text[prefix.len()..]).unwrap();
        assert_eq!(json["reason"], "role_not_allowed");
        assert_eq!(json["outcome"], "denied");
    }

    #[tokio::test]
    async fn tcp_frames_each_message_with_its_length() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut sink = SyslogSink::new(settings(SyslogTarget::Tcp(address)));
        let received = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await.unwrap();
            all
        });
        sink.write(&[denied(), denied()]).await.unwrap();
        drop(sink);
        let all = received.await.unwrap();
        let mut rest = &all[..];
        let mut count = 0;
        while !rest.is_empty() {
            let space = rest.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..space])
                .unwrap()
                .parse()
                .unwrap();
            let message = &rest[space + 1..space + 1 + len];
            assert!(message.starts_with(b"<108>1 "));
            rest = &rest[space + 1 + len..];
            count += 1;
        }
        assert_eq!(count, 2);
    }

    /// A receiver that restarted: the old connection is closed, and the
    /// next batch goes over a new one instead of into the closed one.
    #[tokio::test]
    async fn a_closed_connection_is_replaced_before_a_batch_is_lost_in_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut sink = SyslogSink::new(settings(SyslogTarget::Tcp(address)));
        let first = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            (listener, stream)
        });
        sink.write(&[denied()]).await.unwrap();
        let (listener, stream) = first.await.unwrap();
        drop(stream);
        // Until the receiver's close has arrived (end of stream readable).
        sink.tcp.as_ref().unwrap().readable().await.unwrap();
        let second = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            buf.truncate(n);
            buf
        });
        sink.write(&[denied()]).await.unwrap();
        let received = second.await.unwrap();
        assert!(String::from_utf8_lossy(&received).contains("<108>1 "));
    }

    #[tokio::test]
    async fn a_receiver_that_is_down_fails_the_batch_and_the_next_one_reconnects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut sink = SyslogSink::new(settings(SyslogTarget::Tcp(address.clone())));
        assert!(sink.write(&[denied()]).await.is_err());
        let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        sink.write(&[denied()]).await.unwrap();
        accepted.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn udp_sends_a_datagram_per_record_and_drops_arguments_that_do_not_fit() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = receiver.local_addr().unwrap().to_string();
        let mut sink = SyslogSink::new(settings(SyslogTarget::Udp(address)));
        let big = EventBuilder::new(AuditKind::ToolOutcome, Outcome::Success, Timestamp(5))
            .arguments(serde_json::json!({"blob": "x".repeat(70 * 1024)}))
            .build();
        sink.write(&[denied(), big]).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = receiver.recv(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"<108>1 "));
        let n = receiver.recv(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("<110>1 "), "{text}");
        assert!(text.contains("\"arguments_truncated\":true"), "{text}");
        assert!(!text.contains("xxxx"));
    }
}
