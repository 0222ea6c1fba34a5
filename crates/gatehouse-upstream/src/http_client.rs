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

use crate::client_credentials::ClientCredentials;
use crate::secret::TenantSecrets;

/// Builds the reqwest client of one upstream.
pub(crate) fn build_reqwest(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Where a connection's access token comes from, when the upstream wants
/// one from its own authorization server.
#[derive(Clone)]
pub(crate) struct TokenSource {
    pub(crate) grant: Arc<ClientCredentials>,
    pub(crate) tenants: Option<Arc<dyn TenantSecrets>>,
}

#[derive(Clone)]
pub(crate) struct CappedClient {
    inner: reqwest::Client,
    limit: usize,
    token: Option<TokenSource>,
}

impl CappedClient {
    pub(crate) fn new(
        inner: reqwest::Client,
        limit: usize,
        token: Option<TokenSource>,
    ) -> CappedClient {
        CappedClient {
            inner,
            limit,
            token,
        }
    }

    /// The bearer token for one request: the grant's current one (renewed
    /// before it expires), else what the transport was given.
    async fn bearer(
        &self,
        given: Option<String>,
    ) -> Result<Option<String>, StreamableHttpError<reqwest::Error>> {
        let Some(source) = &self.token else {
            return Ok(given);
        };
        match source.grant.token(source.tenants.as_deref()).await {
            Ok(token) => Ok(Some(token.expose().to_owned())),
            Err(e) => Err(StreamableHttpError::Io(std::io::Error::other(
                e.to_string(),
            ))),
        }
    }

    /// The upstream refused the token: the next request asks for a new one.
    async fn refused<T>(
        &self,
        result: Result<T, StreamableHttpError<reqwest::Error>>,
    ) -> Result<T, StreamableHttpError<reqwest::Error>> {
        if let (Err(StreamableHttpError::AuthRequired(_)), Some(source)) = (&result, &self.token) {
            source.grant.forget().await;
        }
        result
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
        let auth_header = self.bearer(auth_header).await?;
        let response = self
            .refused(
                self.inner
                    .post_message_with_max_sse_event_size(
                        uri,
                        message,
                        session_id,
                        auth_header,
                        custom_headers,
                        max_sse_event_size.min(self.limit),
                    )
                    .await,
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
        let auth_header = self.bearer(auth_header).await?;
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
        let auth_header = self.bearer(auth_header).await?;
        let stream = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size.min(self.limit),
            )
            .await;
        self.refused(stream).await
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
