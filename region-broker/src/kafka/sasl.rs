//! SASL authentication on the Kafka listener (SaslHandshake v1, then SaslAuthenticate):
//! SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, against the region's credentials
//! (`broker::credentials`). When `kafka.sasl_mechanisms` is set, a connection may send
//! ApiVersions and the SASL requests only until it has authenticated; anything else closes
//! it, as Kafka does. A failed authentication is answered SASL_AUTHENTICATION_FAILED
//! (naming no reason a guesser could use) and the connection closed.
//!
//! [`Session`] is the connection's state; the exchange itself is
//! `meridian_security::scram`, pure.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;
use meridian_security::scram::{Credential, Mechanism, ServerExchange};

use crate::broker::Broker;

/// Kafka's error codes of SASL.
pub(super) const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub(super) const ILLEGAL_SASL_STATE: i16 = 34;
pub(super) const SASL_AUTHENTICATION_FAILED: i16 = 58;
const UNSUPPORTED_VERSION: i16 = 35;

/// A mechanism a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    Scram(Mechanism),
    Plain,
}

impl Offered {
    pub(super) fn parse(name: &str) -> Option<Offered> {
        if name.eq_ignore_ascii_case("PLAIN") {
            return Some(Offered::Plain);
        }
        Mechanism::from_name(name).map(Offered::Scram)
    }

    fn name(self) -> &'static str {
        match self {
            Offered::Scram(m) => m.name(),
            Offered::Plain => "PLAIN",
        }
    }
}

/// Where a connection is in authenticating.
#[derive(Debug)]
pub(super) enum Session {
    /// The listener asks for none: every request is served.
    Open,
    /// Waiting for SaslHandshake.
    Start,
    /// A mechanism is chosen; waiting for its first SaslAuthenticate.
    Chosen(Offered),
    /// SCRAM: server-first sent, waiting for client-final.
    Challenged(ServerExchange),
    /// Authenticated as this user.
    Authenticated(String),
}

/// What the connection does after an SASL request.
pub(super) enum Next {
    /// Go on reading requests.
    Continue,
    /// Send the answer, then close (a failed or out-of-order authentication).
    Close,
}

impl Session {
    /// A new connection's: with SASL offered it must authenticate (Kafka's SASL_SSL: the
    /// SASL user is the principal, a client certificate only opened the connection);
    /// without, a client certificate's name is its user (Kafka's SSL listener).
    pub(super) fn new(offered: &[Offered], certified: Option<String>) -> Session {
        match certified {
            _ if !offered.is_empty() => Session::Start,
            Some(name) => Session::Authenticated(name),
            None => Session::Open,
        }
    }

    /// Whether requests other than ApiVersions and SASL are served now.
    pub(super) fn serves(&self) -> bool {
        matches!(self, Session::Open | Session::Authenticated(_))
    }

    /// The authenticated user, if any.
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            Session::Authenticated(u) => Some(u),
            _ => None,
        }
    }

    /// Answers SaslHandshake. Version 0 (raw SASL tokens after it, not SaslAuthenticate
    /// requests; clients older than Kafka 1.0) is refused UNSUPPORTED_VERSION.
    pub(super) fn handshake(
        &mut self,
        offered: &[Offered],
        request: &SaslHandshakeRequest,
        version: i16,
    ) -> (SaslHandshakeResponse, Next) {
        let mut out = SaslHandshakeResponse::default();
        out.mechanisms = offered
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        if version < 1 {
            out.error_code = UNSUPPORTED_VERSION;
            return (out, Next::Close);
        }
        if !matches!(self, Session::Start) {
            out.error_code = ILLEGAL_SASL_STATE;
            return (out, Next::Close);
        }
        match offered
            .iter()
            .find(|m| m.name().eq_ignore_ascii_case(&request.mechanism))
        {
            Some(m) => {
                *self = Session::Chosen(*m);
                (out, Next::Continue)
            }
            None => {
                out.error_code = UNSUPPORTED_SASL_MECHANISM;
                (out, Next::Close)
            }
        }
    }

    /// Answers SaslAuthenticate.
    pub(super) async fn authenticate(
        &mut self,
        broker: &Arc<Broker>,
        request: &SaslAuthenticateRequest,
    ) -> (SaslAuthenticateResponse, Next) {
        let state = std::mem::replace(self, Session::Start);
        let step = match state {
            Session::Chosen(Offered::Plain) => plain(broker, &request.auth_bytes).await,
            Session::Chosen(Offered::Scram(m)) => scram_first(broker, m, &request.auth_bytes).await,
            Session::Challenged(mut exchange) => exchange
                .finish(&request.auth_bytes)
                .map(|(user, last)| (Session::Authenticated(user), Bytes::from(last)))
                .map_err(|e| Refusal::Failed(e.to_string())),
            other => {
                *self = other;
                Err(Refusal::State)
            }
        };
        let mut out = SaslAuthenticateResponse::default();
        match step {
            Ok((next, bytes)) => {
                if let Session::Authenticated(user) = &next {
                    tracing::debug!(user, "a Kafka client authenticated");
                    metrics::counter!("meridian_kafka_authentications_total").increment(1);
                }
                *self = next;
                out.auth_bytes = bytes;
                (out, Next::Continue)
            }
            Err(Refusal::State) => {
                out.error_code = ILLEGAL_SASL_STATE;
                out.error_message = Some(StrBytes::from_static_str(
                    "SaslAuthenticate before SaslHandshake, or after authenticating",
                ));
                (out, Next::Close)
            }
            Err(Refusal::Failed(why)) => {
                metrics::counter!("meridian_kafka_authentication_failures_total").increment(1);
                tracing::info!(reason = why, "a Kafka client failed to authenticate");
                out.error_code = SASL_AUTHENTICATION_FAILED;
                out.error_message = Some(StrBytes::from_string(format!(
                    "Authentication failed: {why}"
                )));
                (out, Next::Close)
            }
        }
    }
}

enum Refusal {
    State,
    Failed(String),
}

const INVALID: &str = "invalid credentials";

async fn credentials_of(
    broker: &Arc<Broker>,
    user: &str,
    mechanism: Mechanism,
) -> Result<Option<Credential>, Refusal> {
    let credentials = broker.credentials().await.map_err(Refusal::Failed)?;
    Ok(credentials.get(user, mechanism))
}

async fn scram_first(
    broker: &Arc<Broker>,
    mechanism: Mechanism,
    first: &[u8],
) -> Result<(Session, Bytes), Refusal> {
    let user = ServerExchange::client_first(first)
        .map_err(|e| Refusal::Failed(e.to_string()))?
        .user;
    let credential = credentials_of(broker, &user, mechanism).await?;
    let secret = broker
        .credentials()
        .await
        .map_err(Refusal::Failed)?
        .unknown_secret()
        .to_vec();
    let mut exchange = ServerExchange::new(mechanism);
    let nonce = meridian_security::password::random_hex(16);
    let challenge = exchange
        .challenge(first, credential, &nonce, &secret)
        .map_err(|e| Refusal::Failed(e.to_string()))?;
    Ok((Session::Challenged(exchange), Bytes::from(challenge)))
}

/// PLAIN: `authzid NUL user NUL password`, checked against the user's strongest SCRAM
/// credential (`Credentials::check_password`).
async fn plain(broker: &Arc<Broker>, message: &[u8]) -> Result<(Session, Bytes), Refusal> {
    let malformed = || Refusal::Failed("a PLAIN message is authzid NUL user NUL password".into());
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let user = std::str::from_utf8(user)
        .map_err(|_| malformed())?
        .to_owned();
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(Refusal::Failed(
            "an authorization id other than the user".into(),
        ));
    }
    let matched = crate::broker::credentials::Credentials::check_password(broker, &user, password)
        .await
        .map_err(Refusal::Failed)?;
    if matched {
        Ok((Session::Authenticated(user), Bytes::new()))
    } else {
        Err(Refusal::Failed(INVALID.into()))
    }
}
