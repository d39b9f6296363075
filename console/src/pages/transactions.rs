//! The transactions page: every region's transactions — open, in doubt (past their
//! timeout, being checked back) and recently ended — with their age, participants and
//! check-backs, as each broker's coordinators know them.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "transactions.html")]
struct TransactionsPage {
    nav: Nav,
    rows: Vec<data::TxnRow>,
}

pub(super) async fn transactions(State(app): State<App>, me: Me) -> Response {
    let regions = match data::regions(&app.control).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    render(&TransactionsPage {
        nav: Nav::of(&me, "Transactions"),
        rows: data::transactions(&regions).await,
    })
}
