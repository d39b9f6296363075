//! SCRAM (RFC 5802, RFC 7677) as Kafka uses it for SASL: SCRAM-SHA-256 and SCRAM-SHA-512,
//! and PLAIN checked against the same stored credentials.
//!
//! Pure: the server's exchange is a state machine fed the client's messages and the
//! server's nonce ([`ServerExchange`]), and the only secret a broker keeps is a
//! [`Credential`] (salt, iterations, StoredKey, ServerKey), never a password. Written here
//! rather than taken from a crate because the SCRAM crates either lack SHA-512 (`scram`) or
//! bring their own async plumbing and crypto; the primitives (PBKDF2, HMAC, SHA-2) are
//! `ring`'s, already in the tree for TLS.
//!
//! An unknown user is not told apart from a wrong password: the exchange runs to the end
//! with a salt derived from the name and a server secret, and fails where a wrong password
//! fails ([`ServerExchange::unknown_user`]).

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};

/// The SCRAM mechanisms Kafka names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    /// Every mechanism, strongest first.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha512, Mechanism::Sha256];

    /// The SASL name (`SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism a SASL name names (case-insensitive), if it is one of these.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's number for it (`ScramMechanism` in the user-credential APIs).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// The mechanism of Kafka's number.
    pub fn from_kafka_type(t: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// The fewest and most PBKDF2 iterations a credential may have (Kafka's bounds).
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

/// What a server keeps of a user's password for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Why a credential could not be made or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("{0} iterations is outside {ITERATIONS_MIN}..={ITERATIONS_MAX}")]
    Iterations(u32),
    #[error("an empty salt")]
    EmptySalt,
    #[error("keys of {got} bytes for {mechanism}, which uses {want}")]
    KeyLength {
        mechanism: &'static str,
        got: usize,
        want: usize,
    },
}

impl Credential {
    /// The credential of `password` with `salt` (at least one byte) and `iterations`.
    pub fn new(
        mechanism: Mechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Credential, CredentialError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(CredentialError::Iterations(iterations));
        }
        if salt.is_empty() {
            return Err(CredentialError::EmptySalt);
        }
        let salted = salted_password(mechanism, password, salt, iterations);
        Ok(Credential::from_salted_password(
            mechanism,
            &salted,
            salt.to_vec(),
            iterations,
        ))
    }

    /// The credential of a salted password (Kafka's AlterUserScramCredentials sends one).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Credential {
        let key = hmac::Key::new(mechanism.hmac(), salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let server_key = hmac::sign(&key, b"Server Key");
        Credential {
            salt,
            iterations,
            stored_key: digest::digest(mechanism.digest(), client_key.as_ref())
                .as_ref()
                .to_vec(),
            server_key: server_key.as_ref().to_vec(),
        }
    }

    /// Refuses a credential that cannot be used with `mechanism`.
    pub fn check(&self, mechanism: Mechanism) -> Result<(), CredentialError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations) {
            return Err(CredentialError::Iterations(self.iterations));
        }
        if self.salt.is_empty() {
            return Err(CredentialError::EmptySalt);
        }
        for key in [&self.stored_key, &self.server_key] {
            if key.len() != mechanism.len() {
                return Err(CredentialError::KeyLength {
                    mechanism: mechanism.name(),
                    got: key.len(),
                    want: mechanism.len(),
                });
            }
        }
        Ok(())
    }

    /// Whether `password` is the one this credential was made from (SASL/PLAIN). Costs the
    /// credential's PBKDF2 iterations: run it off the async workers.
    pub fn matches(&self, mechanism: Mechanism, password: &[u8]) -> bool {
        if self.check(mechanism).is_err() {
            return false;
        }
        let salted = salted_password(mechanism, password, &self.salt, self.iterations);
        let made = Credential::from_salted_password(
            mechanism,
            &salted,
            self.salt.clone(),
            self.iterations,
        );
        constant_time_eq(&made.stored_key, &self.stored_key)
    }
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

fn salted_password(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; mechanism.len()];
    let iterations = NonZeroU32::new(iterations).expect("checked to be at least ITERATIONS_MIN");
    pbkdf2::derive(mechanism.pbkdf2(), iterations, salt, password, &mut out);
    out
}

/// Why an exchange failed. `Display` is what the client is told.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// A message that is not SCRAM, or not the one expected now.
    #[error("invalid SCRAM message: {0}")]
    Malformed(&'static str),
    /// The proof did not match: a wrong password, or an unknown user.
    #[error("authentication failed: invalid credentials")]
    InvalidCredentials,
    /// Channel binding, which Kafka does not use.
    #[error("channel binding is not supported")]
    ChannelBinding,
}

/// The server's side of one SCRAM exchange.
#[derive(Debug)]
pub struct ServerExchange {
    mechanism: Mechanism,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Waiting for client-first.
    Start,
    /// Sent server-first; waiting for client-final.
    Challenged {
        user: String,
        /// None: an unknown user, whose exchange fails at the end.
        credential: Option<Credential>,
        nonce: String,
        gs2_header: String,
        /// client-first-bare "," server-first
        auth_prefix: String,
    },
    Done,
}

/// What the server sends after client-first, with what it needs to look the user up.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name the client gave (SCRAM's `=2C`/`=3D` escapes undone).
    pub user: String,
}

impl ServerExchange {
    pub fn new(mechanism: Mechanism) -> ServerExchange {
        ServerExchange {
            mechanism,
            state: State::Start,
        }
    }

    /// Reads client-first and names the user it is for, so the caller can look up the
    /// credential and call [`ServerExchange::challenge`].
    pub fn client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
        Ok(ClientFirst {
            user: parse_client_first(message)?.user,
        })
    }

    /// Answers client-first with server-first. `credential` is the user's for this
    /// mechanism (None when there is none: see [`ServerExchange::unknown_user`]);
    /// `server_nonce` is fresh random printable text.
    pub fn challenge(
        &mut self,
        message: &[u8],
        credential: Option<Credential>,
        server_nonce: &str,
        unknown_secret: &[u8],
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Start) {
            return Err(ScramError::Malformed(
                "client-first after the exchange began",
            ));
        }
        let first = parse_client_first(message)?;
        let credential = credential.filter(|c| c.check(self.mechanism).is_ok());
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                ServerExchange::unknown_user(self.mechanism, &first.user, unknown_secret),
                ITERATIONS_MIN,
            ),
        };
        let nonce = format!("{}{}", first.client_nonce, server_nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        self.state = State::Challenged {
            user: first.user,
            credential,
            nonce,
            gs2_header: first.gs2_header,
            auth_prefix: format!("{},{server_first}", first.bare),
        };
        Ok(server_first.into_bytes())
    }

    /// The salt an unknown user is challenged with: stable per name, so asking twice does
    /// not tell a made-up name from a real one.
    pub fn unknown_user(mechanism: Mechanism, user: &str, secret: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(mechanism.hmac(), secret);
        hmac::sign(&key, user.as_bytes()).as_ref()[..16].to_vec()
    }

    /// Checks client-final; on success the user and server-final (the client checks it to
    /// know the server held the credential).
    pub fn finish(&mut self, message: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let State::Challenged {
            user,
            credential,
            nonce,
            gs2_header,
            auth_prefix,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::Malformed("client-final before client-first"));
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final has no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Malformed("client-final has no channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("client-final has no nonce"))?;
        // The exchange's nonce, or (as Kafka accepts) one that ends with it: librdkafka
        // sends its own nonce again in front of the server's, which starts with it.
        if !client_nonce.ends_with(&nonce) {
            return Err(ScramError::Malformed(
                "client-final's nonce is not the exchange's",
            ));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("the proof is not base64"))?;
        let credential = credential.ok_or(ScramError::InvalidCredentials)?;
        let auth_message = format!("{auth_prefix},{without_proof}");
        let m = self.mechanism;
        if proof.len() != m.len() {
            return Err(ScramError::InvalidCredentials);
        }
        let signature = hmac::sign(
            &hmac::Key::new(m.hmac(), &credential.stored_key),
            auth_message.as_bytes(),
        );
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let stored = digest::digest(m.digest(), &client_key);
        if !constant_time_eq(stored.as_ref(), &credential.stored_key) {
            return Err(ScramError::InvalidCredentials);
        }
        let server_signature = hmac::sign(
            &hmac::Key::new(m.hmac(), &credential.server_key),
            auth_message.as_bytes(),
        );
        Ok((
            user,
            format!("v={}", B64.encode(server_signature.as_ref())).into_bytes(),
        ))
    }
}

struct ParsedFirst {
    gs2_header: String,
    bare: String,
    user: String,
    client_nonce: String,
}

fn parse_client_first(message: &[u8]) -> Result<ParsedFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header: a channel-binding flag, an optional authzid, then the bare message.
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
    let bare = parts
        .next()
        .ok_or(ScramError::Malformed("no client-first-bare"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("unknown channel-binding flag")),
    }
    let mut fields = bare.split(',');
    let user = fields
        .next()
        .and_then(|f| f.strip_prefix("n="))
        .ok_or(ScramError::Malformed("client-first has no user name"))?;
    let user = unescape(user)?;
    let client_nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
        .ok_or(ScramError::Malformed("client-first has no nonce"))?;
    if bare.starts_with("m=") {
        return Err(ScramError::Malformed(
            "mandatory extensions are not supported",
        ));
    }
    // An authorization identity other than the user is not supported (as Kafka).
    if let Some(authz) = authzid.strip_prefix("a=")
        && unescape(authz)? != user
    {
        return Err(ScramError::Malformed(
            "an authorization id other than the user",
        ));
    }
    Ok(ParsedFirst {
        gs2_header: format!("{flag},{authzid},"),
        bare: bare.to_owned(),
        user,
        client_nonce: client_nonce.to_owned(),
    })
}

/// Undoes SCRAM's escapes in a name (`=2C` is `,` and `=3D` is `=`; any other `=` is an
/// error).
fn unescape(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("a bad escape in the user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("an empty user name"));
    }
    Ok(out)
}

/// The client's side, for Meridian's own tools and tests: client-first, then client-final
/// from server-first, then a check of server-final.
#[derive(Debug)]
pub struct ClientExchange {
    mechanism: Mechanism,
    user: String,
    password: Vec<u8>,
    nonce: String,
    server_key: Option<(Vec<u8>, String)>,
}

impl ClientExchange {
    pub fn new(mechanism: Mechanism, user: &str, password: &[u8], nonce: &str) -> ClientExchange {
        ClientExchange {
            mechanism,
            user: user.replace('=', "=3D").replace(',', "=2C"),
            password: password.to_vec(),
            nonce: nonce.to_owned(),
            server_key: None,
        }
    }

    pub fn first(&self) -> Vec<u8> {
        format!("n,,n={},r={}", self.user, self.nonce).into_bytes()
    }

    /// client-final for server-first.
    pub fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut fields = text.split(',');
        let mut next = |p: &str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(p).map(str::to_owned))
                .ok_or(ScramError::Malformed("server-first lacks a field"))
        };
        let (nonce, salt, iterations) = (next("r=")?, next("s=")?, next("i=")?);
        if !nonce.starts_with(&self.nonce) {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours",
            ));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("the salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("iterations is not a number"))?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) || salt.is_empty() {
            return Err(ScramError::Malformed(
                "the server's salt or iterations are refused",
            ));
        }
        let m = self.mechanism;
        let salted = salted_password(m, &self.password, &salt, iterations);
        let credential = Credential::from_salted_password(m, &salted, salt, iterations);
        let client_key = hmac::sign(&hmac::Key::new(m.hmac(), &salted), b"Client Key");
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("n={},r={},{text},{without_proof}", self.user, self.nonce);
        let signature = hmac::sign(
            &hmac::Key::new(m.hmac(), &credential.stored_key),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        self.server_key = Some((credential.server_key, auth_message));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Whether server-final proves the server knew the credential.
    pub fn verify(&self, server_final: &[u8]) -> bool {
        let Some((key, auth_message)) = &self.server_key else {
            return false;
        };
        let want = hmac::sign(
            &hmac::Key::new(self.mechanism.hmac(), key),
            auth_message.as_bytes(),
        );
        server_final == format!("v={}", B64.encode(want.as_ref())).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn the_rfc_7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = Credential::new(Mechanism::Sha256, b"pencil", &salt, 4096).unwrap();
        let mut server = ServerExchange::new(Mechanism::Sha256);
        let first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        assert_eq!(
            ServerExchange::client_first(first).unwrap().user,
            "user".to_owned()
        );
        let challenge = server
            .challenge(
                first,
                Some(credential),
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                b"s",
            )
            .unwrap();
        assert_eq!(
            challenge,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (user, last) = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    fn exchange(
        mechanism: Mechanism,
        stored: Option<Credential>,
        user: &str,
        password: &[u8],
    ) -> Result<String, ScramError> {
        let mut client = ClientExchange::new(mechanism, user, password, "cnonce");
        let mut server = ServerExchange::new(mechanism);
        let first = client.first();
        assert_eq!(ServerExchange::client_first(&first)?.user, user);
        let challenge = server.challenge(&first, stored, "snonce", b"secret")?;
        let last = client.last(&challenge)?;
        let (who, server_final) = server.finish(&last)?;
        assert!(client.verify(&server_final));
        Ok(who)
    }

    #[test]
    fn the_right_password_passes_and_any_other_fails_on_both_mechanisms() {
        for m in Mechanism::ALL {
            let c = Credential::new(m, b"s3cret", b"salty", 4096).unwrap();
            assert_eq!(
                exchange(m, Some(c.clone()), "alice", b"s3cret").unwrap(),
                "alice"
            );
            assert_eq!(
                exchange(m, Some(c.clone()), "alice", b"s3crets"),
                Err(ScramError::InvalidCredentials)
            );
            assert!(c.matches(m, b"s3cret"));
            assert!(!c.matches(m, b"secret"));
        }
        // A credential of the other mechanism is unusable (keys of the wrong length).
        let c = Credential::new(Mechanism::Sha256, b"pw", b"salt", 4096).unwrap();
        assert!(c.check(Mechanism::Sha512).is_err());
        assert_eq!(
            exchange(Mechanism::Sha512, Some(c), "alice", b"pw"),
            Err(ScramError::InvalidCredentials)
        );
    }

    #[test]
    fn an_unknown_user_fails_where_a_wrong_password_fails_with_a_stable_salt() {
        assert_eq!(
            exchange(Mechanism::Sha512, None, "mallory", b"x"),
            Err(ScramError::InvalidCredentials)
        );
        let a = ServerExchange::unknown_user(Mechanism::Sha512, "mallory", b"k");
        assert_eq!(
            a,
            ServerExchange::unknown_user(Mechanism::Sha512, "mallory", b"k")
        );
        assert_ne!(
            a,
            ServerExchange::unknown_user(Mechanism::Sha512, "eve", b"k")
        );
    }

    #[test]
    fn names_with_commas_and_equals_are_escaped_and_unescaped() {
        let c = Credential::new(Mechanism::Sha256, b"pw", b"salt", 4096).unwrap();
        assert_eq!(
            exchange(Mechanism::Sha256, Some(c), "a,b=c", b"pw").unwrap(),
            "a,b=c"
        );
        assert!(unescape("a=2").is_err());
        assert!(unescape("").is_err());
    }

    #[test]
    fn malformed_and_out_of_order_messages_are_refused() {
        let m = Mechanism::Sha256;
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,r=x",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"x,,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,a=bob,n=user,r=abc",
            b"\xff\xfe",
        ] {
            assert!(ServerExchange::client_first(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ServerExchange::client_first(b"p=tls-unique,,n=user,r=abc").unwrap_err(),
            ScramError::ChannelBinding
        );
        let mut server = ServerExchange::new(m);
        assert!(server.finish(b"c=biws,r=x,p=AAAA").is_err());
        let c = Credential::new(m, b"pw", b"salt", 4096).unwrap();
        let mut server = ServerExchange::new(m);
        server
            .challenge(b"n,,n=u,r=abc", Some(c.clone()), "def", b"k")
            .unwrap();
        // Another nonce, another binding, no proof, a proof of the wrong length.
        for bad in [
            &b"c=biws,r=abcxyz,p=AAAA"[..],
            b"c=eSws,r=abcdef,p=AAAA",
            b"c=biws,r=abcdef",
            b"c=biws,r=abcdef,p=AAAA",
        ] {
            let mut server = ServerExchange::new(m);
            server
                .challenge(b"n,,n=u,r=abc", Some(c.clone()), "def", b"k")
                .unwrap();
            assert!(server.finish(bad).is_err(), "{bad:?}");
        }
        // Once done, no more.
        assert!(server.finish(b"c=biws,r=abcdef,p=AAAA").is_err());
        assert!(server.finish(b"c=biws,r=abcdef,p=AAAA").is_err());
    }

    #[test]
    fn credentials_out_of_bounds_are_refused() {
        let m = Mechanism::Sha512;
        assert_eq!(
            Credential::new(m, b"pw", b"s", 100),
            Err(CredentialError::Iterations(100))
        );
        assert_eq!(
            Credential::new(m, b"pw", b"", 4096),
            Err(CredentialError::EmptySalt)
        );
        assert_eq!(Mechanism::from_name("scram-sha-512"), Some(m));
        assert_eq!(Mechanism::from_kafka_type(2), Some(m));
        assert_eq!(Mechanism::from_kafka_type(0), None);
    }
}
