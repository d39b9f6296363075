//! The ACL page: every region's ACL bindings (Kafka's model; managed with `meridian acl`
//! and Kafka's ACL APIs), as one live broker of each region lists them.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "acls.html")]
struct AclsPage {
    nav: Nav,
    view: data::AclsView,
}

pub(super) async fn acls(State(app): State<App>, me: Me) -> Response {
    let regions = match data::regions(&app.control).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    render(&AclsPage {
        nav: Nav::of(&me, "ACLs"),
        view: data::acls(&regions).await,
    })
}
