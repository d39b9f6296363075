//! The ACL page: every region's ACL bindings (Kafka's model; also managed with `meridian
//! acl` and Kafka's ACL APIs), as one live broker of each region lists them. An admin adds
//! a binding with the form and deletes one with its row's button; each change is audited.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "acls.html")]
struct AclsPage {
    nav: Nav,
    view: data::AclsView,
    regions: Vec<String>,
    notice: String,
    error: String,
}

async fn page(app: &App, me: &Me, notice: String, error: String) -> Response {
    let regions = match data::regions(&app.control).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    render(&AclsPage {
        nav: Nav::of(me, "ACLs"),
        view: data::acls(&regions).await,
        regions: regions.into_iter().map(|r| r.name).collect(),
        notice,
        error,
    })
}

pub(super) async fn acls(State(app): State<App>, me: Me) -> Response {
    page(&app, &me, String::new(), String::new()).await
}

#[derive(Deserialize)]
pub(super) struct AclForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    change: data::AclRow,
}

pub(super) async fn add_acl(State(app): State<App>, me: Me, Form(f): Form<AclForm>) -> Response {
    change(app, me, f, false).await
}

pub(super) async fn delete_acl(State(app): State<App>, me: Me, Form(f): Form<AclForm>) -> Response {
    change(app, me, f, true).await
}

/// Adds or deletes a binding: admins only, audited whatever the outcome.
async fn change(app: App, me: Me, f: AclForm, delete: bool) -> Response {
    let action = if delete { "delete ACL" } else { "add ACL" };
    let target = f.change.describe();
    if let Err(r) = me.permit(&app, &f.csrf, Role::Admin, action, &target) {
        return r.into_response();
    }
    let regions = data::regions(&app.control).await.unwrap_or_default();
    match data::alter_acl(&regions, &f.change, delete).await {
        Ok(()) => {
            app.audit.record(&me.session, action, &target, "ok");
            let done = if delete { "Deleted" } else { "Added" };
            page(&app, &me, format!("{done}: {target}."), String::new()).await
        }
        Err(e) => {
            app.audit
                .record(&me.session, action, &target, &format!("failed: {}", e.0));
            page(&app, &me, String::new(), e.0).await
        }
    }
}
