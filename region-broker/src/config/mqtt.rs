//! The `[mqtt]` section of the broker's configuration: the MQTT listener's bounds, its
//! TLS and client certificates, and where MQTT topic names live.

use std::path::PathBuf;

use meridian_security::tls::ClientAuth;
use serde::Deserialize;

/// The `[mqtt]` section: what the MQTT listener holds at most, and where MQTT topic names
/// live.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Open connections at once (TCP and WebSocket together); past it a CONNECT is answered
    /// "server busy" and the connection closed.
    pub connections_max: usize,
    /// Open connections from one client address.
    pub connections_per_address_max: usize,
    /// Largest packet accepted, in bytes (CONNACK's maximum packet size); a larger one is
    /// refused from its fixed header, before its bytes are read.
    pub packet_bytes_max: u32,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout_ms: u64,
    /// The longest keep-alive granted, in seconds (a client asking for more, or for none,
    /// is told this one: MQTT 5's server keep alive).
    pub keep_alive_max_s: u16,
    /// QoS 1 and 2 PUBLISHes a client may have unacknowledged at once (CONNACK's receive
    /// maximum); one more closes the connection (0x93).
    pub receive_maximum: u16,
    /// QoS 1 and 2 messages sent to a client and not yet acknowledged, when it names no
    /// receive maximum of its own (MQTT 3.1.1).
    pub inflight_max: u16,
    /// Topic aliases a client may set (CONNACK's topic alias maximum).
    pub topic_alias_max: u16,
    /// The longest session expiry granted, in seconds.
    pub session_expiry_max_s: u32,
    /// Sessions a broker holds (connected and kept for their expiry); past it a new
    /// session's CONNECT is answered "quota exceeded" (MQTT 5) or "server unavailable".
    pub sessions_max: usize,
    /// Messages read for one session and not yet sent to it (the rest wait in the log).
    pub session_queue_max: usize,
    /// Subscriptions of one session.
    pub subscriptions_max: usize,
    /// Retained messages a broker holds; past it a new topic's retained message is
    /// refused (MQTT 5: quota exceeded).
    pub retained_max: usize,
    /// The Meridian topic keeping retained messages (key: the MQTT topic name; an empty
    /// value clears one). Every broker reads it whole into memory at start.
    pub retained_topic: String,
    /// The Meridian topic keeping persistent sessions (key: the client id; value: the
    /// session's subscriptions and expiry; an empty value ends it), read whole by every
    /// broker, so a client resumes its session at any broker of the region.
    pub sessions_topic: String,
    /// Where MQTT topic names live, beyond the default (a name's first level names the
    /// topic).
    pub mapping: Vec<MqttMapping>,
    /// Whether a CONNECT without a user name and password is accepted (mosquitto's
    /// `allow_anonymous`). When false, both must name a user of the region's credentials
    /// (`meridian user set`); anything else is refused.
    pub allow_anonymous: bool,
    /// The TCP listener's certificate chain (PEM): with `tls_key`, it speaks TLS only
    /// (MQTT over TLS, mosquitto's `certfile`). Read again when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// The TCP listener's private key (PEM; readable by its owner only).
    pub tls_key: Option<PathBuf>,
    /// Whether clients are asked for a certificate (`none`, `requested` or `required`:
    /// mosquitto's `require_certificate`). A valid one's common name is the client's user
    /// name, no password asked (mosquitto's `use_identity_as_username`).
    pub tls_client_auth: ClientAuth,
    /// The CA (PEM) client certificates must be signed by (mosquitto's `cafile`).
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            connections_max: 100_000,
            connections_per_address_max: 100_000,
            packet_bytes_max: 1 << 20,
            connect_timeout_ms: 10_000,
            keep_alive_max_s: 3600,
            receive_maximum: 1024,
            inflight_max: 64,
            topic_alias_max: 64,
            session_expiry_max_s: 7 * 24 * 3600,
            sessions_max: 100_000,
            session_queue_max: 256,
            subscriptions_max: 256,
            retained_max: 100_000,
            retained_topic: "mqtt-retained".to_owned(),
            sessions_topic: "mqtt-sessions".to_owned(),
            mapping: Vec::new(),
            allow_anonymous: true,
            tls_cert: None,
            tls_key: None,
            tls_client_auth: ClientAuth::None,
            tls_client_ca: None,
        }
    }
}

/// One `[[mqtt.mapping]]`: MQTT topic names starting with `prefix` live in `topic`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttMapping {
    /// A topic-name prefix of whole levels: ends with `/` (`factory/line1/`).
    pub prefix: String,
    /// The Meridian topic holding them.
    pub topic: String,
}

impl MqttMapping {
    /// Checks a mapping: a prefix of whole levels without wildcards, a valid topic name.
    pub fn validate(&self) -> Result<(), String> {
        if !self.prefix.ends_with('/') || self.prefix.len() < 2 {
            return Err(format!(
                "the prefix {:?} must be whole levels ending with '/' (\"factory/\")",
                self.prefix
            ));
        }
        if self.prefix.contains(['+', '#', '\0']) || self.prefix.starts_with('$') {
            return Err(format!(
                "the prefix {:?} may not hold '+', '#' or NUL, nor start with '$'",
                self.prefix
            ));
        }
        meridian_proto::names::validate("topic", &self.topic).map_err(|e| e.to_string())
    }

    /// The prefix's levels.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.prefix.trim_end_matches('/').split('/')
    }
}
