//! `send_email`: validates a message and drops it as an `.eml` file into the
//! tenant's outbox. Nothing is delivered; the operator reads the outbox.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use gatehouse_core::{Principal, Timestamp};
use serde_json::{Value, json};

use crate::ToolOutput;
use crate::arguments::wrong_type;
use crate::error::ToolError;
use crate::sandbox::io_failure;

pub(crate) const MAX_RECIPIENTS: usize = 20;
const MAX_SUBJECT_CHARS: usize = 200;
const MAX_BODY_BYTES: usize = 256 * 1024;
const FROM: &str = "gatehouse@localhost";

/// Recipients from `to`: one string or an array of strings.
pub(crate) fn recipients(value: &Value) -> Result<Vec<String>, ToolError> {
    let list: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| wrong_type("to", "a string or an array of strings", v))
            })
            .collect::<Result<_, _>>()?,
        other => return Err(wrong_type("to", "a string or an array of strings", other)),
    };
    if list.is_empty() {
        return Err(ToolError::invalid("'to' needs at least one recipient"));
    }
    if list.len() > MAX_RECIPIENTS {
        return Err(ToolError::invalid(format!(
            "'to' has {} recipients; at most {MAX_RECIPIENTS} are allowed",
            list.len()
        )));
    }
    list.into_iter()
        .map(|address| {
            refuse_line_breaks("to", address)?;
            if is_valid_address(address) {
                Ok(address.to_string())
            } else {
                Err(ToolError::invalid(format!(
                    "'to' contains an invalid address: '{}'",
                    address.chars().take(100).collect::<String>()
                )))
            }
        })
        .collect()
}

pub(crate) struct Message<'a> {
    pub(crate) to: Vec<String>,
    pub(crate) subject: &'a str,
    pub(crate) body: &'a str,
}

/// Messages one tenant's outbox may hold: nothing sends or removes them
/// but the operator, and the outbox shares its volume with the database
/// and the audit log (a full volume stops every tenant's calls).
pub(crate) const MAX_QUEUED: usize = 1000;

/// How many messages the outbox holds (counting stops at `MAX_QUEUED`).
async fn count_queued(outbox: &std::path::Path) -> Result<usize, ToolError> {
    let outbox = outbox.to_path_buf();
    tokio::task::spawn_blocking(move || match std::fs::read_dir(&outbox) {
        Ok(listing) => Ok(listing.take(MAX_QUEUED).count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(_) => Err(ToolError::failed("could not read the outbox")),
    })
    .await
    .map_err(|_| ToolError::failed("reading the outbox was interrupted"))?
}

/// Writes the message into `outbox` and returns the tool output naming the file.
pub(crate) async fn queue(
    outbox: std::path::PathBuf,
    principal: &Principal,
    message: Message<'_>,
    now: Timestamp,
) -> Result<ToolOutput, ToolError> {
    refuse_line_breaks("subject", message.subject)?;
    if message.subject.chars().any(char::is_control) {
        return Err(ToolError::invalid("'subject' contains a control character"));
    }
    if message.subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(ToolError::invalid(format!(
            "'subject' is longer than {MAX_SUBJECT_CHARS} characters"
        )));
    }
    if message.body.len() > MAX_BODY_BYTES {
        return Err(ToolError::invalid(format!(
            "'body' is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    // Counted and written under the outbox's lock: calls side by side at
    // 999 messages would each pass the count.
    let turn = crate::area_locks::lock(&outbox).await;
    let queued = count_queued(&outbox).await?;
    if queued >= MAX_QUEUED {
        return Err(ToolError::refused(format!(
            "your outbox holds {queued} messages, the most it may; ask the operator to deliver or \
             remove them"
        )));
    }
    let id = uuid::Uuid::new_v4();
    let file_name = format!("{}-{id}.eml", compact_utc(now)?);
    let eml = render(principal, &message, now, id)?;
    let path = outbox.join(&file_name);
    let bytes = eml.len();
    // The lock goes with the write: a call cancelled meanwhile must not
    // let another count before the file lands.
    tokio::task::spawn_blocking(move || {
        let written = write_new(&path, eml.as_bytes());
        drop(turn);
        written
    })
    .await
    .map_err(|_| ToolError::failed("queuing the message was interrupted"))??;
    Ok(ToolOutput {
        text: format!(
            "queued message {file_name} for {} recipient(s) in the outbox; it was not sent",
            message.to.len()
        ),
        structured: Some(json!({
            "file": file_name,
            "recipients": message.to,
            "bytes": bytes,
            "sent": false,
        })),
    })
}

/// Header injection: a CR or LF in a header value would start a new header.
fn refuse_line_breaks(field: &str, value: &str) -> Result<(), ToolError> {
    if value.contains(['\r', '\n']) {
        Err(ToolError::refused(format!(
            "'{field}' contains a line break, which could inject mail headers"
        )))
    } else {
        Ok(())
    }
}

/// A deliberately simple `local@domain` check: dot-atom local part, a
/// domain of letters, digits and hyphens.
fn is_valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let domain_ok = (1..=253).contains(&domain.len())
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// Principal fields come from configuration; keep them on one header line
/// whatever they contain.
fn header_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn render(
    principal: &Principal,
    message: &Message<'_>,
    now: Timestamp,
    id: uuid::Uuid,
) -> Result<String, ToolError> {
    let date = datetime(now)?
        .format(&time::format_description::well_known::Rfc2822)
        .map_err(|_| ToolError::failed("could not format the date"))?;
    let mut eml = String::new();
    let mut header = |name: &str, value: &str| {
        eml.push_str(name);
        eml.push_str(": ");
        eml.push_str(value);
        eml.push_str("\r\n");
    };
    header("From", FROM);
    header("To", &message.to.join(", "));
    header("Subject", message.subject);
    header("Date", &date);
    header(
        "Message-ID",
        &format!("<{}@gatehouse.localhost>", id.simple()),
    );
    header("MIME-Version", "1.0");
    header("Content-Type", "text/plain; charset=utf-8");
    header("Content-Transfer-Encoding", "8bit");
    header("X-Gatehouse-Tenant", &header_safe(&principal.tenant));
    header("X-Gatehouse-Agent", &header_safe(&principal.agent));
    if let Some(human) = &principal.human {
        header("X-Gatehouse-Human", &header_safe(human));
    }
    eml.push_str("\r\n");
    // RFC 5322 lines end in CRLF; normalise whatever the caller sent.
    let body = message.body.replace("\r\n", "\n").replace('\r', "\n");
    for line in body.split('\n') {
        eml.push_str(line);
        eml.push_str("\r\n");
    }
    Ok(eml)
}

fn datetime(now: Timestamp) -> Result<time::OffsetDateTime, ToolError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now.as_millis()) * 1_000_000)
        .map_err(|_| ToolError::failed("the clock is out of range"))
}

/// `20231114T221320123Z`: sorts by time and is safe in a file name.
fn compact_utc(now: Timestamp) -> Result<String, ToolError> {
    let format = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second][subsecond digits:3]Z"
    );
    datetime(now)?
        .format(&format)
        .map_err(|_| ToolError::failed("could not format the time"))
}

fn write_new(path: &Path, content: &[u8]) -> Result<(), ToolError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_failure("create the outbox file", &e))?;
    let written = file.write_all(content).and_then(|()| file.sync_all());
    written.map_err(|e| {
        let _ = fs::remove_file(path);
        io_failure("write the outbox file", &e)
    })
}

#[cfg(test)]
#[path = "email_tests.rs"]
mod tests;
