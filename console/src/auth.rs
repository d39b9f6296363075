//! Who may do what: users from the configuration file with argon2-hashed passwords, three
//! roles (viewer < operator < admin), sessions held in memory behind an HttpOnly,
//! SameSite=Strict cookie, and a CSRF token per session that every form carries back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// What a user may do. Ordered: each role may do everything of the ones below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything, changes nothing.
    Viewer,
    /// Creates and alters topics, resets consumer groups, fails regions over.
    Operator,
    /// Also deletes topics.
    Admin,
}

impl Role {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A user of the configuration file.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Argon2 PHC string (`meridian-console hash-password` makes one).
    pub password_hash: String,
}

pub use meridian_security::password::{hash_password, random_hex};

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: String,
    /// Their role.
    pub role: Role,
    /// What every form of this session must carry back.
    pub csrf: String,
    last_seen: Instant,
}

/// The name of the session cookie.
pub const COOKIE: &str = "meridian_session";

/// How long an idle session lasts.
const IDLE: Duration = Duration::from_secs(8 * 3600);

/// Users and live sessions.
#[derive(Debug)]
pub struct Auth {
    users: Vec<User>,
    sessions: Mutex<HashMap<String, Session>>,
    /// A hash of a random password, checked for an unknown name: a wrong name costs what a
    /// wrong password does, so the time of the answer does not tell which names exist.
    unknown: String,
    /// Failed logins per client address and per name (`throttle.rs`).
    throttle: Mutex<crate::throttle::Throttle>,
}

/// Keys the login throttle keeps at most.
const THROTTLE_KEYS: usize = 10_000;

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A wrong name or password (the same answer for both).
    Wrong,
    /// Too many failures for this name or address: try again after this long (the
    /// password was not checked).
    Throttled(Duration),
}

impl Auth {
    /// Checks every user's hash parses, so a bad file fails at start, not at login.
    pub fn new(users: Vec<User>) -> anyhow::Result<Auth> {
        for u in &users {
            meridian_security::password::check_hash(&u.password_hash).map_err(|e| {
                anyhow::anyhow!(
                    "user {:?}: password_hash is {e}; make one with `meridian-console hash-password`",
                    u.name
                )
            })?;
        }
        anyhow::ensure!(
            !users.is_empty(),
            "no users configured: add [[users]] entries (name, role, password_hash) to the configuration file"
        );
        let unknown = hash_password(&random_hex(16))?;
        Ok(Auth {
            users,
            sessions: Mutex::new(HashMap::new()),
            unknown,
            throttle: Mutex::new(crate::throttle::Throttle::new(THROTTLE_KEYS)),
        })
    }

    /// Logs a user in from `client`: the new session's id, or why not — a wrong name or
    /// password (the same answer for both, after the same work), or too many failures for
    /// the name or the address (then the password is not checked). The password is checked
    /// on a blocking thread (argon2 takes tens of milliseconds), never on the async workers.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        client: &str,
    ) -> Result<(String, Session), Refused> {
        let (by_name, by_address) = (format!("user {name}"), format!("address {client}"));
        let mut keys = vec![by_name.as_str()];
        if !client.is_empty() {
            keys.push(by_address.as_str());
        }
        self.throttle
            .lock()
            .expect("throttle lock poisoned")
            .check(&keys, Instant::now())
            .map_err(Refused::Throttled)?;
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map_or_else(|| self.unknown.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let right = tokio::task::spawn_blocking(move || {
            meridian_security::password::verify_password(&password, &hash)
        })
        .await
        .unwrap_or(false);
        let mut throttle = self.throttle.lock().expect("throttle lock poisoned");
        let Some(user) = user.filter(|_| right) else {
            throttle.failed(&keys, Instant::now());
            return Err(Refused::Wrong);
        };
        throttle.succeeded(&keys);
        drop(throttle);
        let session = Session {
            user: user.name.clone(),
            role: user.role,
            csrf: random_hex(16),
            last_seen: Instant::now(),
        };
        let id = random_hex(32);
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        sessions.retain(|_, s| s.last_seen.elapsed() < IDLE);
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The session of a cookie value, if live.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        let s = sessions.get_mut(id)?;
        if s.last_seen.elapsed() >= IDLE {
            sessions.remove(id);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    /// Ends a session.
    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .expect("sessions lock poisoned")
            .remove(id);
    }
}

/// The session id in a `Cookie` header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .map(str::trim)
        .find_map(|kv| kv.strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_roles_sessions_and_tokens() {
        let users = vec![
            User {
                name: "ana".into(),
                role: Role::Admin,
                password_hash: hash_password("s3cret").unwrap(),
            },
            User {
                name: "vic".into(),
                role: Role::Viewer,
                password_hash: hash_password("look").unwrap(),
            },
        ];
        let auth = Auth::new(users).unwrap();
        assert_eq!(
            auth.login("ana", "wrong", "1.2.3.4").await.err(),
            Some(Refused::Wrong)
        );
        assert_eq!(
            auth.login("nobody", "s3cret", "1.2.3.4").await.err(),
            Some(Refused::Wrong)
        );
        let (id, s) = auth.login("ana", "s3cret", "1.2.3.4").await.unwrap();
        assert_eq!((s.user.as_str(), s.role), ("ana", Role::Admin));
        assert_eq!(auth.session(&id).unwrap().csrf, s.csrf);
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        auth.logout(&id);
        assert!(auth.session(&id).is_none());
        assert_eq!(
            cookie_value(&format!("a=b; {COOKIE}=xyz; c=d")),
            Some("xyz")
        );
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
        let bad = User {
            name: "x".into(),
            role: Role::Viewer,
            password_hash: "plain".into(),
        };
        assert!(Auth::new(vec![bad]).is_err());
        assert!(Auth::new(Vec::new()).is_err());
    }
}
