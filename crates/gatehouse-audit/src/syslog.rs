//! The syslog sink: every audit record as an RFC 5424 message, for SIEMs.
//!
//! Over UDP (RFC 5426: one message per datagram, best effort: a datagram
//! can be lost without anyone knowing, so UDP is for collectors on the same
//! host or network), TCP (RFC 6587 octet-counting framing) or TLS (RFC 5425:
//! the same framing inside TLS, the receiver's certificate verified; see
//! `tls.rs`). Over TCP and TLS a batch counts as written once the kernel
//! took every byte; a receiver that is down, refuses, fails the handshake
//! or stalls fails the batch, so the calls waiting for it are refused
//! (back-pressure) rather than answered without their records. A closed or
//! broken connection is opened again with the next batch.
//! Plain syslog has no acknowledgement: records the receiver's kernel took
//! just before the receiver died are lost to it (the database and the file
//! keep them); RELP would be needed to know.
//!
//! The message is the record as the JSON-lines file has it (link included),
//! so a SIEM can verify the chain too: `<PRI>1 TIMESTAMP HOST gatehouse PID
//! KIND - BOM{json}`.

use std::time::{Duration, Instant};

use futures::FutureExt;
use gatehouse_core::{AuditEvent, AuditKind, Outcome};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::AuditError;

mod tls;

pub use tls::{SyslogTls, SyslogTlsError, SyslogTlsFiles};

/// How long a write (or a connection) may take before the batch fails.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver that refuses a TLS client after the handshake closes the
/// connection within a round trip; one still open this long after its
/// handshake was accepted.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// How long the close_notify at the end may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
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
    Tls(String),
}

impl SyslogTarget {
    /// `udp://host:port`, `tcp://host:port` or `tls://host:port`.
    pub fn parse(address: &str) -> Result<SyslogTarget, String> {
        let (scheme, rest) = address.split_once("://").ok_or_else(|| {
            format!("{address:?}: expected udp://host:port, tcp://host:port or tls://host:port")
        })?;
        let valid = !rest.contains('/')
            && matches!(rest.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(format!("{address:?}: expected host:port after {scheme}://"));
        }
        match scheme {
            "udp" => Ok(SyslogTarget::Udp(rest.to_string())),
            "tcp" => Ok(SyslogTarget::Tcp(rest.to_string())),
            "tls" => Ok(SyslogTarget::Tls(rest.to_string())),
            _ => Err(format!("{address:?}: the scheme must be udp, tcp or tls")),
        }
    }

    /// `udp`, `tcp` or `tls`.
    pub fn scheme(&self) -> &'static str {
        match self {
            SyslogTarget::Udp(_) => "udp",
            SyslogTarget::Tcp(_) => "tcp",
            SyslogTarget::Tls(_) => "tls",
        }
    }

    /// The address's host, without the port or an IPv6 address's brackets:
    /// the name a TLS receiver's certificate is verified against by default.
    pub fn host(&self) -> &str {
        let (SyslogTarget::Udp(address) | SyslogTarget::Tcp(address) | SyslogTarget::Tls(address)) =
            self;
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(host, _)| host);
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }
}

/// The sink's settings.
#[derive(Debug, Clone)]
pub struct SyslogSettings {
    pub target: SyslogTarget,
    /// 0–23; 13 is "log audit".
    pub facility: u8,
    pub app_name: String,
    /// The HOSTNAME field (the machine's name when not configured).
    pub hostname: String,
    /// The TLS client for a `tls://` target (loaded with the configuration).
    pub tls: Option<SyslogTls>,
}

pub(crate) struct SyslogSink {
    settings: SyslogSettings,
    pid: u32,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    tls: Option<TlsStream<TcpStream>>,
    /// When the current TLS connection's handshake ended.
    tls_opened: Instant,
    /// The current TLS connection was seen open `refusal_wait` after its
    /// handshake: the receiver accepted it.
    tls_accepted: bool,
    /// The receiver seemed to refuse the last TLS connection: the next one
    /// is watched for `refusal_wait` before it is given a batch.
    tls_watch: bool,
    /// `REFUSAL_WAIT` (shorter in tests).
    refusal_wait: Duration,
}

#[derive(Serialize)]
struct Message<'a, E: Serialize> {
    time: String,
    #[serde(flatten)]
    event: &'a E,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    arguments_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fields_truncated: bool,
}

/// In a datagram still too large without its arguments (a caller can make
/// a tool name or an error text as long as the body allows), each text is
/// cut to this many bytes: a record over UDP is always sent, shortened,
/// rather than failing its whole batch (and holding calls off).
const DATAGRAM_FIELD_LIMIT: usize = 1024;

/// `value` with every string longer than [`DATAGRAM_FIELD_LIMIT`] cut (at a
/// character boundary) and marked.
fn shorten_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.len() > DATAGRAM_FIELD_LIMIT => {
            let mut end = DATAGRAM_FIELD_LIMIT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("…[truncated]");
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(shorten_strings),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(shorten_strings),
        _ => {}
    }
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
            tls: None,
            tls_opened: Instant::now(),
            tls_accepted: false,
            tls_watch: false,
            refusal_wait: REFUSAL_WAIT,
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
            fields_truncated: false,
        };
        serde_json::to_writer(&mut out, &message)
            .map_err(|e| AuditError::WriteFailed(format!("syslog: {e}")))?;
        Ok(out)
    }

    /// [`SyslogSink::message`] without arguments and with every long text
    /// cut: the last resort for a datagram.
    fn shortened_message(&self, event: &AuditEvent) -> Result<Vec<u8>, AuditError> {
        let failed = |e: serde_json::Error| AuditError::WriteFailed(format!("syslog: {e}"));
        let mut full = self.message(event, true)?;
        let stripped = AuditEvent {
            arguments: None,
            ..event.clone()
        };
        let mut body = serde_json::to_value(&stripped).map_err(failed)?;
        shorten_strings(&mut body);
        let message = Message {
            time: event.ts.to_rfc3339(),
            event: &body,
            arguments_truncated: event.arguments.is_some(),
            fields_truncated: true,
        };
        // The header as rendered, then the shortened body.
        let header_end = full
            .windows(BOM.len())
            .position(|w| w == BOM)
            .map_or(0, |i| i + BOM.len());
        full.truncate(header_end);
        serde_json::to_writer(&mut full, &message).map_err(failed)?;
        Ok(full)
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
                    if message.len() > MAX_DATAGRAM {
                        message = self.shortened_message(event)?;
                    }
                    datagrams.push(message);
                }
                Ok(Rendered::Datagrams(datagrams))
            }
            SyslogTarget::Tcp(_) | SyslogTarget::Tls(_) => {
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
                let connection = &mut self.tcp;
                let result = within_timeout(async {
                    if connection.is_none() {
                        let stream = TcpStream::connect(&address).await?;
                        stream.set_nodelay(true)?;
                        *connection = Some(stream);
                    }
                    write_batch(connection.as_mut(), &framed).await
                })
                .await;
                if let Err(e) = result {
                    // A part of the batch may have been sent: the receiver
                    // may see some records twice after the retry, never
                    // fewer.
                    self.tcp = None;
                    return Err(failed(e));
                }
                Ok(())
            }
            (SyslogTarget::Tls(address), Rendered::Stream(framed)) => {
                if framed.is_empty() {
                    return Ok(());
                }
                let Some(tls) = &self.settings.tls else {
                    return Err(AuditError::WriteFailed(
                        "syslog: a tls:// address without TLS settings".into(),
                    ));
                };
                // As over TCP, but the check must go through TLS: the
                // receiver does send TLS records after the handshake (TLS
                // 1.3 session tickets), which a read on the socket would
                // take from under the TLS layer. A TLS read consumes those
                // and completes only with data (never sent by a syslog
                // receiver), the end of the stream or an error (a TLS
                // alert).
                if let Some(stream) = &mut self.tls {
                    match stream.read(&mut [0u8; 64]).now_or_never() {
                        None => {
                            if self.tls_opened.elapsed() >= self.refusal_wait {
                                self.tls_accepted = true;
                            }
                        }
                        Some(ended) => {
                            self.tls = None;
                            // A receiver that refuses the client certificate
                            // (or the lack of one) can say so only after the
                            // client's side of the handshake is done under
                            // TLS 1.3, and rsyslog checks it only then under
                            // any version: it closes the connection at once,
                            // and what was written on it, which the kernel
                            // took, is lost. A connection closed before it
                            // was seen open a while after its handshake is
                            // taken for such a refusal, so that the calls are
                            // refused rather than answered while every batch
                            // is lost this way. (A receiver that restarted
                            // just after a new connection costs one batch.)
                            if !self.tls_accepted {
                                self.tls_watch = true;
                                return Err(failed(refused(ended.err())));
                            }
                        }
                    }
                }
                let connection = &mut self.tls;
                let opened = &mut self.tls_opened;
                let accepted = &mut self.tls_accepted;
                let watch = &mut self.tls_watch;
                let refusal_wait = self.refusal_wait;
                let result = within_timeout(async {
                    if connection.is_none() {
                        let stream = TcpStream::connect(&address).await?;
                        stream.set_nodelay(true)?;
                        // A receiver whose certificate does not verify fails
                        // here, before a byte of the batch is sent.
                        let mut stream = TlsConnector::from(tls.config())
                            .connect(tls.server_name.clone(), stream)
                            .await?;
                        *opened = Instant::now();
                        *accepted = false;
                        if *watch {
                            // The last connection seemed refused: this one
                            // gets a batch only once it outlived a refusal.
                            let verdict =
                                tokio::time::timeout(refusal_wait, stream.read(&mut [0u8; 64]))
                                    .await;
                            if let Ok(ended) = verdict {
                                return Err(refused(ended.err()));
                            }
                            *accepted = true;
                            *watch = false;
                        }
                        *connection = Some(stream);
                    }
                    write_batch(connection.as_mut(), &framed).await
                })
                .await;
                if let Err(e) = result {
                    self.tls = None;
                    return Err(failed(e));
                }
                Ok(())
            }
            _ => Err(AuditError::WriteFailed(
                "syslog: a batch rendered for another transport".into(),
            )),
        }
    }

    /// Ends a TLS connection with close_notify once everything is written:
    /// without it, the receiver takes every stop of the server (and every
    /// CLI command) for a truncated connection and logs an error.
    pub(crate) async fn close(&mut self) {
        if let Some(mut stream) = self.tls.take() {
            // Best effort: the records are written; a receiver that does not
            // take the alert in time is left to notice the closed socket.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
        }
    }

    /// Renders and sends (tests).
    #[cfg(test)]
    async fn write(&mut self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        let rendered = self.render(batch)?;
        self.send(rendered).await
    }
}

/// The error for a TLS connection the receiver closed right after it was
/// opened; `cause`: how it ended, when it was not a plain close.
fn refused(cause: Option<std::io::Error>) -> std::io::Error {
    let mut message = "the receiver closed the TLS connection right after it was opened \
        (does it refuse the client certificate, or the lack of one?)"
        .to_string();
    if let Some(cause) = cause {
        message.push_str(&format!(": {cause}"));
    }
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, message)
}

/// Bounds a connection (with its handshake) and a write together.
async fn within_timeout(work: impl Future<Output = std::io::Result<()>>) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the receiver did not take the records in time",
            ))
        })
}

/// Writes a framed batch and flushes it (through TLS: into the socket).
async fn write_batch<S: AsyncWrite + Unpin>(
    stream: Option<&mut S>,
    framed: &[u8],
) -> std::io::Result<()> {
    match stream {
        Some(stream) => {
            stream.write_all(framed).await?;
            stream.flush().await
        }
        None => Ok(()),
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
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    use tls::testdata;
    use tokio::io::AsyncRead;
    use tokio_rustls::TlsAcceptor;

    fn settings(target: SyslogTarget) -> SyslogSettings {
        SyslogSettings {
            target,
            facility: 13,
            app_name: "gatehouse".into(),
            hostname: "gate house\n1".into(),
            tls: None,
        }
    }

    /// A sink to a TLS receiver at `address`, trusting `ca` and presenting
    /// the test client certificate (unless `anonymous`).
    fn tls_sink(address: String, ca: &str, server_name: Option<&str>) -> SyslogSink {
        tls_sink_as(address, ca, server_name, false)
    }

    fn tls_sink_as(
        address: String,
        ca: &str,
        server_name: Option<&str>,
        anonymous: bool,
    ) -> SyslogSink {
        let target = SyslogTarget::Tls(address);
        let tls = SyslogTls::load(
            target.host(),
            &SyslogTlsFiles {
                ca_file: Some(testdata(ca)),
                client_cert_file: (!anonymous).then(|| testdata("client.pem")),
                client_key_file: (!anonymous).then(|| testdata("client.key")),
                server_name: server_name.map(String::from),
            },
        )
        .unwrap();
        SyslogSink::new(SyslogSettings {
            tls: Some(tls),
            ..settings(target)
        })
    }

    /// A TLS receiver with the test certificate for 127.0.0.1 that requires
    /// a client certificate signed by the test CA. `tickets`: the TLS 1.3
    /// session tickets it sends after each handshake.
    async fn tls_receiver(tickets: usize) -> (tokio::net::TcpListener, TlsAcceptor, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener, tls_acceptor(tickets, true), address)
    }

    fn tls_acceptor(tickets: usize, client_certificate: bool) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(testdata("ca.pem")).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_certificate {
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(
                CertificateDer::pem_file_iter(testdata("server.pem"))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(testdata("server.key")).unwrap(),
            )
            .unwrap();
        config.send_tls13_tickets = tickets;
        TlsAcceptor::from(Arc::new(config))
    }

    /// Accepts `n` connections one after the other; for each, how many
    /// bytes arrived before it closed (0: the handshake failed).
    fn receive_tls(
        listener: tokio::net::TcpListener,
        acceptor: TlsAcceptor,
        n: usize,
    ) -> tokio::task::JoinHandle<Vec<usize>> {
        tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..n {
                let (stream, _) = listener.accept().await.unwrap();
                results.push(match acceptor.accept(stream).await {
                    Ok(mut stream) => read_until_closed(&mut stream).await.len(),
                    Err(_) => 0,
                });
            }
            results
        })
    }

    /// Reads from a TLS stream until the peer closes it (with or without
    /// close_notify).
    async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
        read_to_the_end(stream).await.0
    }

    /// What the peer sent, and whether it ended with close_notify.
    async fn read_to_the_end<S: AsyncRead + Unpin>(stream: &mut S) -> (Vec<u8>, bool) {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return (all, true),
                Err(_) => return (all, false),
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The messages of an octet-counted stream.
    fn frames(mut rest: &[u8]) -> Vec<&[u8]> {
        let mut messages = Vec::new();
        while !rest.is_empty() {
            let space = rest.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..space])
                .unwrap()
                .parse()
                .unwrap();
            messages.push(&rest[space + 1..space + 1 + len]);
            rest = &rest[space + 1 + len..];
        }
        messages
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
        assert_eq!(
            SyslogTarget::parse("tls://siem.example:6514"),
            Ok(SyslogTarget::Tls("siem.example:6514".into()))
        );
        for bad in [
            "siem:514",
            "http://siem:514",
            "tcp://",
            "udp://siem",
            "tcp://a:1/x",
            "tls://:6514",
            "tls://siem:port",
            "tls://siem:65536",
            "tls://siem:6514/",
            "ssl://siem:6514",
        ] {
            assert!(SyslogTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_host_is_the_address_without_port_or_brackets() {
        for (address, host) in [
            ("tls://siem.example:6514", "siem.example"),
            ("tls://127.0.0.1:6514", "127.0.0.1"),
            ("tls://[::1]:6514", "::1"),
            ("udp://[fe80::1]:514", "fe80::1"),
        ] {
            let target = SyslogTarget::parse(address).unwrap();
            assert_eq!(target.host(), host, "{address}");
        }
        assert_eq!(SyslogTarget::parse("tls://h:1").unwrap().scheme(), "tls");
        assert_eq!(SyslogTarget::parse("tcp://h:1").unwrap().scheme(), "tcp");
        assert_eq!(SyslogTarget::parse("udp://h:1").unwrap().scheme(), "udp");
    }

    #[tokio::test]
    async fn tls_frames_each_message_inside_tls_with_the_client_certificate() {
        let (listener, acceptor, address) = tls_receiver(2).await;
        let mut sink = tls_sink(address, "ca.pem", None);
        let received = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(stream).await.unwrap();
            let client_certs = stream.get_ref().1.peer_certificates().map(<[_]>::len);
            (read_to_the_end(&mut stream).await, client_certs)
        });
        sink.write(&[denied(), denied()]).await.unwrap();
        // The session tickets the receiver sent after the handshake are
        // not mistaken for a closed connection: the second batch goes over
        // the same one.
        sink.tls
            .as_ref()
            .unwrap()
            .get_ref()
            .0
            .readable()
            .await
            .unwrap();
        sink.write(&[denied()]).await.unwrap();
        // At the end, close_notify: the receiver sees a proper end.
        sink.close().await;
        let ((all, clean), client_certs) = received.await.unwrap();
        assert!(clean);
        assert_eq!(client_certs, Some(1));
        let messages = frames(&all);
        assert_eq!(messages.len(), 3);
        for message in messages {
            assert!(message.starts_with(b"<108>1 "));
        }
    }

    /// Verification is real: a receiver whose certificate another CA signed,
    /// or whose certificate does not name what the sink expects, gets
    /// nothing, and the batch fails (the calls waiting for it are refused).
    #[tokio::test]
    async fn a_receiver_that_does_not_verify_fails_the_batch() {
        let (listener, acceptor, address) = tls_receiver(2).await;
        let accepted = receive_tls(listener, acceptor, 2);
        let mut sink = tls_sink(address.clone(), "other-ca.pem", None);
        let err = sink.write(&[denied()]).await.unwrap_err().to_string();
        assert!(err.contains("UnknownIssuer"), "{err}");
        let mut sink = tls_sink(address, "ca.pem", Some("siem.example"));
        let err = sink.write(&[denied()]).await.unwrap_err().to_string();
        assert!(err.contains("not valid for name \"siem.example\""), "{err}");
        assert_eq!(accepted.await.unwrap(), vec![0, 0]);
    }

    /// A renewed certificate is used without a restart: the CA file is
    /// replaced, the server reloads (a clone of the sink's TLS settings),
    /// and the next connection verifies with it. A broken file is refused
    /// and the configuration in use stays.
    #[tokio::test]
    async fn reloaded_tls_files_are_used_from_the_next_connection() {
        let (listener, acceptor, address) = tls_receiver(2).await;
        let received = receive_tls(listener, acceptor, 2);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::copy(testdata("other-ca.pem"), &ca).unwrap();
        let target = SyslogTarget::Tls(address);
        let tls = SyslogTls::load(
            target.host(),
            &SyslogTlsFiles {
                ca_file: Some(ca.clone()),
                client_cert_file: Some(testdata("client.pem")),
                client_key_file: Some(testdata("client.key")),
                server_name: None,
            },
        )
        .unwrap();
        let server_copy = tls.clone();
        let mut sink = SyslogSink::new(SyslogSettings {
            tls: Some(tls),
            ..settings(target)
        });
        let err = sink.write(&[denied()]).await.unwrap_err().to_string();
        assert!(err.contains("UnknownIssuer"), "{err}");

        // A file that is not PEM: refused, nothing changes.
        std::fs::write(&ca, "not a certificate").unwrap();
        let refused = server_copy.reload().unwrap_err();
        assert!(
            matches!(refused, SyslogTlsError::CaFile { .. }),
            "{refused}"
        );

        std::fs::copy(testdata("ca.pem"), &ca).unwrap();
        server_copy.reload().unwrap();
        sink.write(&[denied()]).await.unwrap();
        sink.close().await;
        let results = received.await.unwrap();
        assert_eq!(results[0], 0);
        assert!(results[1] > 0, "{results:?}");
    }

    /// A receiver that restarted: as over TCP, the next batch goes over a
    /// new connection instead of into the closed one.
    #[tokio::test]
    async fn a_closed_tls_connection_is_replaced_before_a_batch_is_lost_in_it() {
        // No session tickets: the socket turns readable only when the
        // receiver closes.
        let (listener, acceptor, address) = tls_receiver(0).await;
        let mut sink = tls_sink(address, "ca.pem", None);
        let acceptor2 = acceptor.clone();
        let (restart, restarted) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(stream).await.unwrap();
            let mut buf = [0u8; 1];
            stream.read_exact(&mut buf).await.unwrap();
            restarted.await.unwrap();
            stream.shutdown().await.unwrap();
            listener
        });
        // Seen open after the time a refusal takes (a connection closed
        // sooner looks like one: the next test).
        sink.refusal_wait = Duration::from_millis(20);
        sink.write(&[denied()]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        sink.write(&[denied()]).await.unwrap();
        assert!(sink.tls_accepted);
        restart.send(()).unwrap();
        let listener = first.await.unwrap();
        sink.tls
            .as_ref()
            .unwrap()
            .get_ref()
            .0
            .readable()
            .await
            .unwrap();
        let second = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = acceptor2.accept(stream).await.unwrap();
            read_until_closed(&mut stream).await
        });
        sink.write(&[denied()]).await.unwrap();
        drop(sink);
        let received = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second batch went into the closed connection")
            .unwrap();
        let messages = frames(&received);
        assert_eq!(messages.len(), 1);
        assert!(messages[0].starts_with(b"<108>1 "));
    }

    /// A receiver that refuses the client after the handshake (as TLS 1.3
    /// lets it, and rsyslog does under any version) takes the first batch
    /// and closes: the next batch fails, and so does every one after it
    /// while each new connection is refused, until one is not.
    #[tokio::test]
    async fn a_receiver_that_refuses_the_client_after_the_handshake_fails_the_batches() {
        let (listener, acceptor, address) = tls_receiver(2).await;
        let mut sink = tls_sink_as(address, "ca.pem", None, true);
        sink.refusal_wait = Duration::from_millis(200);
        let receiver = tokio::spawn(async move {
            // Two connections refused, then one accepted without a client
            // certificate.
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                assert!(acceptor.accept(stream).await.is_err());
            }
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = tls_acceptor(2, false).accept(stream).await.unwrap();
            read_until_closed(&mut stream).await
        });
        // Lost: nobody can tell yet.
        sink.write(&[denied()]).await.unwrap();
        // However late the next batch comes, a connection that closed
        // before it was seen open past the refusal wait was refused.
        sink.tls
            .as_ref()
            .unwrap()
            .get_ref()
            .0
            .readable()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = sink.write(&[denied()]).await.unwrap_err().to_string();
        assert!(err.contains("refuse the client certificate"), "{err}");
        assert!(err.contains("CertificateRequired"), "{err}");
        let err = sink.write(&[denied()]).await.unwrap_err().to_string();
        assert!(err.contains("refuse the client certificate"), "{err}");
        assert!(sink.tls_watch);
        sink.write(&[denied()]).await.unwrap();
        assert!(!sink.tls_watch);
        drop(sink);
        assert_eq!(frames(&receiver.await.unwrap()).len(), 1);
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

    /// A caller can make a record too large for a datagram without its
    /// arguments (a 70 KB tool name in a denied call): it is sent shortened,
    /// not failed with its batch (which would refuse every call in it).
    #[tokio::test]
    async fn udp_shortens_a_record_too_large_even_without_arguments() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = receiver.local_addr().unwrap().to_string();
        let mut sink = SyslogSink::new(settings(SyslogTarget::Udp(address)));
        let huge = EventBuilder::new(AuditKind::ToolDecision, Outcome::Denied, Timestamp(5))
            .tool(&format!("é{}", "x".repeat(70 * 1024)))
            .error("y".repeat(70 * 1024))
            .reason("unknown_tool")
            .arguments(serde_json::json!({"a": 1}))
            .build();
        sink.write(&[huge, denied()]).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = receiver.recv(&mut buf).await.unwrap();
        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
        assert!(n <= MAX_DATAGRAM, "{n}");
        assert!(text.starts_with("<108>1 "), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(text.split('\u{feff}').nth(1).unwrap()).unwrap();
        assert_eq!(json["fields_truncated"], true);
        assert_eq!(json["arguments_truncated"], true);
        assert_eq!(json["reason"], "unknown_tool");
        assert!(json["tool"].as_str().unwrap().ends_with("…[truncated]"));
        // The rest of the batch follows.
        let n = receiver.recv(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"<108>1 "));
    }
}
