//! How a gRPC call carries its caller's credentials: `authorization: Bearer TOKEN` on every
//! request (the daemons check it: `meridian_daemon::listener::authenticate`).
//!
//! A process has one identity: [`set_token`] once at start (a daemon from its token file,
//! the CLI from its profile or `MERIDIAN_TOKEN`), and every channel made after through
//! [`Authed::new`] carries it.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::transport::Channel;

static TOKEN: OnceLock<http::HeaderValue> = OnceLock::new();

/// Sets this process's token (the first call wins); an error when it cannot be a header.
pub fn set_token(token: &str) -> Result<(), String> {
    let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
    value.set_sensitive(true);
    let _ = TOKEN.set(value);
    Ok(())
}

/// Whether this process calls with a token.
pub fn has_token() -> bool {
    TOKEN.get().is_some()
}

/// A channel whose requests carry this process's token (none set: as they are).
#[derive(Debug, Clone)]
pub struct Authed {
    inner: Channel,
    token: Option<Arc<http::HeaderValue>>,
}

impl Authed {
    /// `channel` with the token set so far.
    pub fn new(channel: Channel) -> Authed {
        Authed {
            inner: channel,
            token: TOKEN.get().cloned().map(Arc::new),
        }
    }
}

impl Service<http::Request<Body>> for Authed {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, (**token).clone());
        }
        Service::call(&mut self.inner, request)
    }
}
