//! Who calls a daemon's gRPC API: [`Authenticated`] reads each request's `authorization:
//! Bearer TOKEN`, checks it against the daemon's tokens file
//! (`meridian_security::tokens`) and puts the caller ([`Caller`]) in the request's
//! extensions, where the API's methods find it to decide what it may do. A token that is
//! not known is refused (`UNAUTHENTICATED`) whatever the method. A request without one
//! on a TLS connection whose client presented a certificate the listener checked
//! (`tls_client_auth`) is the certificate's user (`User:COMMON-NAME`); otherwise it is
//! refused when credentials are required, else it goes on as anonymous.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use meridian_security::tokens::{Principal, TokensFile};
use tonic::body::Body;
use tonic::codegen::{Service, http};

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The daemon has no tokens: it does not authenticate, and anyone may do anything.
    Unchecked,
    /// No credentials, where they are not required: what needs a principal is refused.
    Anonymous,
    /// The principal its token names.
    Known(Principal),
}

impl Caller {
    /// The caller of `request` (unchecked when the listener does not authenticate).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Unchecked)
    }

    /// Refuses (audited) unless the caller is one `allowed` accepts, or the daemon does
    /// not authenticate; `what` (the action) and `who_may` (who may do it) name the
    /// refusal.
    pub fn require(
        &self,
        allowed: impl Fn(&Principal) -> bool,
        what: &str,
        who_may: &str,
    ) -> Result<(), tonic::Status> {
        let who = match self {
            Caller::Unchecked => return Ok(()),
            Caller::Known(p) if allowed(p) => return Ok(()),
            Caller::Known(p) => p.to_string(),
            Caller::Anonymous => "an anonymous caller".to_owned(),
        };
        metrics::counter!("meridian_grpc_denied_total").increment(1);
        tracing::warn!(target: "audit", principal = %who, action = what, "refused");
        Err(tonic::Status::permission_denied(format!(
            "{who} may not {what}: only {who_may} may"
        )))
    }

    /// The principal, when known.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Known(p) => Some(p),
            _ => None,
        }
    }
}

/// How a listener authenticates: the tokens it knows (its tokens file, read again when it
/// changes), and whether anonymous requests are refused.
#[derive(Debug, Clone, Default)]
pub struct Authentication {
    pub tokens: Option<Arc<TokensFile>>,
    pub required: bool,
}

impl Authentication {
    /// Reads the tokens file, when given (`what` names its setting in errors).
    pub fn load(
        tokens_file: Option<&std::path::Path>,
        allow_anonymous: bool,
    ) -> anyhow::Result<Authentication> {
        let tokens = match tokens_file {
            Some(path) => {
                let tokens = TokensFile::load(path)?;
                tracing::info!(tokens = tokens.tokens().len(), file = %path.display(), anonymous = allow_anonymous, "gRPC calls are authenticated");
                Some(Arc::new(tokens))
            }
            None => None,
        };
        Ok(Authentication {
            tokens,
            required: !allow_anonymous,
        })
    }
}

/// A service whose requests carry their [`Caller`].
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Authentication,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, auth: Authentication) -> Authenticated<S> {
        Authenticated { inner, auth }
    }
}

/// The caller a request's headers name (or, without a token, its connection's client
/// certificate: `certified`, its common name), or why it is refused.
pub fn authenticate(
    auth: &Authentication,
    headers: &http::HeaderMap,
    certified: Option<&str>,
) -> Result<Caller, tonic::Status> {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    tonic::Status::unauthenticated("the authorization header is not `Bearer TOKEN`")
                })
        })
        .transpose()?;
    if let (None, Some(name)) = (presented, certified) {
        return Ok(Caller::Known(Principal::User(name.to_owned())));
    }
    match (presented, &auth.tokens) {
        (_, None) => Ok(Caller::Unchecked),
        (Some(token), Some(tokens)) => match tokens.tokens().verify(token.trim()) {
            Some(p) => Ok(Caller::Known(p.clone())),
            None => {
                metrics::counter!("meridian_grpc_unauthenticated_total").increment(1);
                Err(tonic::Status::unauthenticated(
                    "the token is not known here: ask for one (`meridian token create`) and set it in your profile (`meridian profile create`) or MERIDIAN_TOKEN",
                ))
            }
        },
        (None, Some(_)) if !auth.required => Ok(Caller::Anonymous),
        (None, Some(_)) => {
            metrics::counter!("meridian_grpc_unauthenticated_total").increment(1);
            Err(tonic::Status::unauthenticated(
                "credentials required: create a profile with a token (`meridian profile create NAME --token-stdin`) or set MERIDIAN_TOKEN",
            ))
        }
    }
}

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = super::grpc::Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Borrowed: the caller is built (owning what it needs) before the request changes.
        let certified = request
            .extensions()
            .get::<super::grpc::ConnectionInfo>()
            .and_then(|c| c.certified());
        match authenticate(&self.auth, request.headers(), certified) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => super::grpc::refuse(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_security::tokens::{self, Entry};

    fn auth(required: bool) -> (Authentication, String) {
        let token = tokens::generate().unwrap();
        let text = tokens::render(&[Entry {
            principal: "Mirror:eu".into(),
            sha256: tokens::hash(&token),
        }]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        meridian_security::certs::write_private(&path, &text).unwrap();
        (
            Authentication {
                tokens: Some(Arc::new(TokensFile::load(&path).unwrap())),
                required,
            },
            token,
        )
    }

    fn headers(value: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = value {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_known_token_names_its_caller_and_others_are_refused() {
        let (a, token) = auth(true);
        let caller = authenticate(&a, &headers(Some(&format!("Bearer {token}"))), None).unwrap();
        assert_eq!(caller, Caller::Known(Principal::Mirror("eu".into())));
        let refused = |h| authenticate(&a, &h, None).unwrap_err().code();
        assert_eq!(refused(headers(None)), tonic::Code::Unauthenticated);
        assert_eq!(
            refused(headers(Some("Bearer mrd_unknown"))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(refused(headers(Some(&token))), tonic::Code::Unauthenticated);
        // Not required: anonymous goes on, a wrong token still does not.
        let (a, _) = auth(false);
        let anonymous = authenticate(&a, &headers(None), None).unwrap();
        assert_eq!(anonymous, Caller::Anonymous);
        assert!(authenticate(&a, &headers(Some("Bearer mrd_x")), None).is_err());
        // No tokens at all: unchecked.
        let off = Authentication::default();
        assert_eq!(
            authenticate(&off, &headers(None), None).unwrap(),
            Caller::Unchecked
        );
        // A client certificate, without a token: its user; a token presented wins.
        let (a, token) = auth(true);
        assert_eq!(
            authenticate(&a, &headers(None), Some("alice")).unwrap(),
            Caller::Known(Principal::User("alice".into()))
        );
        assert_eq!(
            authenticate(
                &a,
                &headers(Some(&format!("Bearer {token}"))),
                Some("alice")
            )
            .unwrap(),
            Caller::Known(Principal::Mirror("eu".into()))
        );
        assert!(authenticate(&a, &headers(Some("Bearer mrd_x")), Some("alice")).is_err());
        // What a caller may do is its principal's.
        let us = |p: &Principal| *p == Principal::Mirror("us".into());
        let mirror = Caller::Known(Principal::Mirror("eu".into()));
        let e = mirror
            .require(us, "append mirrored records into us", "Mirror:us")
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("only Mirror:us may"),
            "{}",
            e.message()
        );
        assert!(
            Caller::Known(Principal::Mirror("us".into()))
                .require(us, "x", "y")
                .is_ok()
        );
        assert!(anonymous.require(us, "x", "y").is_err());
        assert!(Caller::Unchecked.require(us, "x", "y").is_ok());
    }
}
