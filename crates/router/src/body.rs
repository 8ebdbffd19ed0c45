//! Reading an HTTP answer of a node (or of any server the router calls) into memory, never more
//! than a limit: a peer whose body never ends costs at most the limit.

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// It is longer than the limit (the rest is not read; dropping the response closes the
    /// connection instead of draining it).
    TooLarge,
    /// Reading failed (connection cut, timeout).
    Read(reqwest::Error),
}

/// The body of `response`, at most `limit` bytes.
pub async fn read_at_most(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    // Content-Length is the peer's word: capacity never above the limit.
    let mut body = Vec::with_capacity(response.content_length().map_or(0, |n| n as usize).min(limit));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
