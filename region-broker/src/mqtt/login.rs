//! Who may connect: with `mqtt.allow_anonymous` off, a CONNECT's user name and password
//! must name a user of the region's credentials (the users `meridian user set` makes, the
//! same Kafka's SASL checks), checked off the async workers. A CONNECT without them is
//! refused "not authorized", a wrong password "bad user name or password" (the same for
//! a name that does not exist, at the same cost).

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_proto::mqtt::packet::{ConnectReturnCode, Login};

use crate::broker::credentials::Credentials;

use super::Mqtt;

pub(super) async fn check(
    mqtt: &Arc<Mqtt>,
    login: Option<&Login>,
    peer: SocketAddr,
) -> Result<(), ConnectReturnCode> {
    if mqtt.config.allow_anonymous {
        return Ok(());
    }
    let Some(login) = login.filter(|l| !l.username.is_empty()) else {
        metrics::counter!("meridian_mqtt_authentication_failures_total").increment(1);
        tracing::info!(%peer, "an MQTT CONNECT without a user name refused (mqtt.allow_anonymous is off)");
        return Err(ConnectReturnCode::NotAuthorized);
    };
    match Credentials::check_password(&mqtt.broker, &login.username, login.password.as_bytes())
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            metrics::counter!("meridian_mqtt_authentication_failures_total").increment(1);
            tracing::info!(%peer, user = %login.username, "an MQTT CONNECT with a wrong user name or password refused");
            Err(ConnectReturnCode::BadUserNamePassword)
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "an MQTT CONNECT refused: the credentials are not read");
            Err(ConnectReturnCode::ServerUnavailable)
        }
    }
}
