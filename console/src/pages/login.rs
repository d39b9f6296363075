//! Logging in and out: a session cookie and its CSRF token.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    nav: Nav,
    error: String,
    next: String,
}

#[derive(Deserialize)]
pub(super) struct Next {
    #[serde(default)]
    next: String,
}

pub(super) async fn login_page(Query(q): Query<Next>) -> Response {
    render(&Login {
        nav: Nav {
            title: "Log in".into(),
            ..Nav::default()
        },
        error: String::new(),
        next: q.next,
    })
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
}

pub(super) async fn login(
    State(app): State<App>,
    parts: Parts,
    Form(f): Form<LoginForm>,
) -> Response {
    // The client's address when the server knows it (it serves with connect info).
    let client = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    match app.auth.login(&f.name, &f.password, &client).await {
        Ok((id, session)) => {
            app.audit.record(&session, "login", "", "ok");
            let next = if local_path(&f.next) {
                f.next
            } else {
                "/".into()
            };
            (
                [(
                    header::SET_COOKIE,
                    format!("{COOKIE}={id}; {}", app.cookie_attributes()),
                )],
                Redirect::to(&next),
            )
                .into_response()
        }
        Err(crate::auth::Refused::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            app.audit.record_as(
                &f.name,
                "",
                "login",
                "",
                &format!("refused: too many failed logins from {client} or for this name; retry in {secs} s"),
            );
            let page = Login {
                nav: Nav {
                    title: "Log in".into(),
                    ..Nav::default()
                },
                error: format!("Too many failed logins: try again in {secs} s."),
                next: f.next,
            };
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                render(&page),
            )
                .into_response()
        }
        Err(crate::auth::Refused::Wrong) => {
            app.audit
                .record_as(&f.name, "", "login", "", "refused: wrong name or password");
            let page = Login {
                nav: Nav {
                    title: "Log in".into(),
                    ..Nav::default()
                },
                error: "Wrong name or password.".into(),
                next: f.next,
            };
            (StatusCode::UNAUTHORIZED, render(&page)).into_response()
        }
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(
    State(app): State<App>,
    me: Me,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = me.check_csrf(&app, &f.csrf, "logout", "") {
        return r.into_response();
    }
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::cookie_value)
    {
        app.auth.logout(id);
    }
    app.audit.record(&me.session, "logout", "", "ok");
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; {}; Max-Age=0", app.cookie_attributes()),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

/// Whether `next` is a path on this site (where a login may send the browser back to):
/// never `//host` or `/\host`, which browsers read as another site, nor a control
/// character.
fn local_path(next: &str) -> bool {
    let mut chars = next.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !next.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_login_returns_only_to_a_path_of_this_site() {
        for ok in ["/", "/topics?q=a", "/topics/orders"] {
            assert!(super::local_path(ok), "{ok}");
        }
        for bad in [
            "",
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "/a\nb",
            "topics",
        ] {
            assert!(!super::local_path(bad), "{bad}");
        }
        assert_eq!(super::url_encode("/topics?q=a b"), "/topics%3Fq%3Da%20b");
    }
}
