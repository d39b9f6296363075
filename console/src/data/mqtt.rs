//! Every region's MQTT sessions, for the MQTT page.

#[allow(clippy::wildcard_imports)]
use super::*;

/// An MQTT session as the broker holding it shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MqttRow {
    pub region: String,
    pub broker: u32,
    pub client_id: String,
    pub connected: bool,
    pub peer: String,
    pub protocol: String,
    /// How long it has been connected, or disconnected.
    pub since: String,
    pub expiry: String,
    pub subscriptions: String,
    pub in_flight: u32,
    pub queued: u32,
}

/// A persistent MQTT session's record in its region's sessions topic.
#[derive(Debug, Clone, Serialize)]
pub struct MqttStoredRow {
    pub region: String,
    pub client_id: String,
    pub subscriptions: String,
    pub expiry: String,
    /// The broker that wrote it last.
    pub owner: String,
    /// Whether a live broker holds the session (else it waits in the record for its
    /// client to come back to any broker of the region).
    pub held: bool,
}

/// Every region's MQTT sessions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MqttView {
    pub sessions: Vec<MqttRow>,
    pub stored: Vec<MqttStoredRow>,
    /// Brokers serving MQTT.
    pub serving: usize,
    /// Brokers whose lists were cut (more sessions than one answer lists).
    pub cut: Vec<String>,
}

fn seconds(s: u32) -> String {
    if s == 0 {
        "ends with its connection".into()
    } else {
        format!("{s} s")
    }
}

/// Every region's MQTT sessions, asked of each live broker: the sessions it holds, and
/// the region's session records it has read (every broker reads them all).
pub async fn mqtt_sessions(regions: &[Region]) -> MqttView {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut view = MqttView::default();
    let mut stored = std::collections::BTreeMap::new();
    for (region, broker, mut c) in live_brokers(regions).await {
        let Ok(answer) = c.list_mqtt_sessions(v1::ListMqttSessionsRequest {}).await else {
            continue;
        };
        let a = answer.into_inner();
        if !a.serving {
            continue;
        }
        view.serving += 1;
        if a.sessions.len() < a.sessions_total as usize || a.stored.len() < a.stored_total as usize
        {
            view.cut.push(format!(
                "{region}/{broker}: {} of {} sessions, {} of {} records",
                a.sessions.len(),
                a.sessions_total,
                a.stored.len(),
                a.stored_total
            ));
        }
        for s in a.sessions {
            view.sessions.push(MqttRow {
                region: region.clone(),
                broker,
                since: format!("{:.1} s", (now - s.since_ms).max(0) as f64 / 1000.0),
                expiry: seconds(s.expiry_s),
                subscriptions: s.subscriptions.join(", "),
                client_id: s.client_id,
                connected: s.connected,
                peer: s.peer,
                protocol: s.protocol,
                in_flight: s.in_flight,
                queued: s.queued,
            });
        }
        for s in a.stored {
            stored
                .entry((region.clone(), s.client_id.clone()))
                .or_insert(MqttStoredRow {
                    region: region.clone(),
                    subscriptions: s.subscriptions.join(", "),
                    expiry: seconds(s.expiry_s),
                    owner: s.owner.split('/').next().unwrap_or_default().to_owned(),
                    client_id: s.client_id,
                    held: false,
                });
        }
    }
    for row in stored.values_mut() {
        row.held = view
            .sessions
            .iter()
            .any(|s| s.region == row.region && s.client_id == row.client_id);
    }
    view.stored = stored.into_values().collect();
    view.sessions.sort_by(|a, b| {
        (&a.region, &a.client_id, a.broker).cmp(&(&b.region, &b.client_id, b.broker))
    });
    view
}
