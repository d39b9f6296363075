//! Who may do what: users from the configuration file with argon2-hashed passwords, three
//! roles (viewer < operator < admin), sessions held in memory behind an HttpOnly,
//! SameSite=Strict cookie, and a CSRF token per session that every form carries back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// What a user may do. Ordered: each role may do everything of the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
        Ok(Auth {
            users,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Logs a user in: the new session's id, or `None` for a wrong name or password (the
    /// same answer for both).
    pub fn login(&self, name: &str, password: &str) -> Option<(String, Session)> {
        let user = self.users.iter().find(|u| u.name == name)?;
        if !meridian_security::password::verify_password(password, &user.password_hash) {
            return None;
        }
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
        Some((id, session))
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

    #[test]
    fn passwords_roles_sessions_and_tokens() {
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
        assert!(auth.login("ana", "wrong").is_none());
        assert!(auth.login("nobody", "s3cret").is_none());
        let (id, s) = auth.login("ana", "s3cret").unwrap();
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
