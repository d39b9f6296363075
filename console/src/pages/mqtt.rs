//! The MQTT page: every region's MQTT sessions — connected, or kept for their expiry
//! after their client went — as the brokers holding them show them, and the persistent
//! sessions' records in each region's sessions topic (a session whose broker died waits
//! there for its client to come back to any broker of the region).

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "mqtt.html")]
struct MqttPage {
    nav: Nav,
    view: data::MqttView,
}

pub(super) async fn mqtt(State(app): State<App>, me: Me) -> Response {
    let regions = match data::regions(&app.control).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    render(&MqttPage {
        nav: Nav::of(&me, "MQTT"),
        view: data::mqtt_sessions(&regions).await,
    })
}
