//! The length of a value as JSON, counted without building the text.

/// The length of `value` serialized as JSON (`serde_json`, compact),
/// counted without allocating it: for size limits and the `result_bytes`
/// of audit records, which need the number, not the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that cannot serialize
    // counts what was written of it.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Counts the bytes written to it.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_the_serialized_length() {
        let value = serde_json::json!({
            "a": [1, 2.5, "three", null],
            "quote": "\"",
            "t": "t\u{e9}\n",
        });
        assert_eq!(json_len(&value), serde_json::to_vec(&value).unwrap().len());
        assert_eq!(json_len(&"plain"), 7);
        let message = serde_json::json!({"a": [1, 2, "three"], "b": null});
        assert_eq!(
            json_len(&message),
            serde_json::to_vec(&message).unwrap().len()
        );
    }
}
