//! The HTTP client under rmcp's Streamable HTTP transport.
//!
//! rmcp's reqwest integration sends exactly the headers it is given, so the
//! outbound headers are fixed here, per connection: the transport's own
//! (`Accept`, `Mcp-Session-Id`, `MCP-Protocol-Version`, `Mcp-Method`…) and
//! the configured credential. No cookie store, no redirects (a redirect
//! could carry the credential to another host), no caller headers: the call
//! API has no way to pass any.
//!
//! Size: SSE events are bounded by the configured limit inside rmcp; plain
//! JSON answers are bounded by rmcp at 16 MiB while reading, then checked
//! against the configured limit here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::Sse;

/// Builds the reqwest client of one upstream.
pub(crate) fn build_reqwest(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[derive(Clone)]
pub(crate) struct CappedClient {
    inner: reqwest::Client,
    limit: usize,
}

impl CappedClient {
    pub(crate) fn new(inner: reqwest::Client, limit: usize) -> CappedClient {
        CappedClient { inner, limit }
    }
}

/// Serialised size of a message, counted without allocating it.
fn json_len(message: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, message);
    count.0
}

impl StreamableHttpClient for CappedClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            self.limit,
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let response = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size.min(self.limit),
            )
            .await?;
        if let StreamableHttpPostResponse::Json(message, _) = &response
            && json_len(message) > self.limit
        {
            return Err(StreamableHttpError::ResponseBodyTooLarge {
                max_size: self.limit,
            });
        }
        Ok(response)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            self.limit,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size.min(self.limit),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_matches_the_serialised_length() {
        let value = serde_json::json!({"a": [1, 2, "three"], "b": null});
        assert_eq!(json_len(&value), serde_json::to_vec(&value).unwrap().len());
    }
}
