//! A failed-over region's Kafka writes. When the control plane fails this broker's region
//! over (`meridian region failover`, or its brokers' leases lapse), the region's view says
//! why and names the region taking over; the broker then sends every Kafka produce on to
//! that region's partition leaders instead of writing here, until the region is restored.
//! Native clients move by themselves (routing through the control plane); Kafka clients
//! know only their bootstrap brokers.
//!
//! Why not answer Metadata with the other region's brokers instead: a partition's offsets
//! are each region's own, and a Kafka consumer keeps its position as an offset. Moved by
//! Metadata, a consumer would fetch the other region at this region's offsets, skipping or
//! repeating messages. So consumers stay and read here (the mirrors bring the other
//! region's writes), while producers' writes land where the region taking over holds them.
//!
//! Only plain producers' writes go on: an idempotent or transactional producer's sequences
//! live in this region's log groups, so its batches wait (refused as retriable) until the
//! region is restored — written elsewhere, a retry arriving after the restore could not be
//! recognised here.

use std::sync::Arc;

use meridian_proto::batch::Message;
use meridian_proto::v1;
use meridian_region_client::{RegionClient, RegionError, Stay};

use super::{Acks, Broker};

/// The region taking this one's writes over, from the region's view.
#[derive(Debug)]
pub struct Takeover {
    /// Why this region is down.
    pub reason: String,
    /// The region taking over.
    pub region: String,
    /// Its live brokers' gRPC addresses, comma-separated.
    brokers: String,
    /// A client of its brokers, made on first use.
    client: tokio::sync::OnceCell<RegionClient>,
}

impl Broker {
    /// Takes the view's failover state (see the module's doc): a new takeover when the
    /// region or its brokers changed, none once the region is restored.
    pub(super) fn apply_takeover(&self, view: &v1::RegionView) {
        let wanted = (!view.down.is_empty() && !view.takeover.is_empty()).then(|| {
            let brokers: Vec<&str> = view
                .takeover_brokers
                .iter()
                .map(|b| b.grpc.as_str())
                .collect();
            (view.takeover.as_str(), brokers.join(","))
        });
        let mut current = self.takeover.write().expect("takeover lock poisoned");
        let same = match (&*current, &wanted) {
            (Some(t), Some((region, brokers))) => t.region == *region && t.brokers == *brokers,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        match wanted {
            Some((region, brokers)) => {
                tracing::warn!(region = %self.config.region, takeover = region, reason = %view.down, "region failed over: Kafka writes go to the region taking over");
                *current = Some(Arc::new(Takeover {
                    reason: view.down.clone(),
                    region: region.to_owned(),
                    brokers,
                    client: tokio::sync::OnceCell::new(),
                }));
            }
            None => {
                if current.is_some() {
                    tracing::info!(region = %self.config.region, "region restored: Kafka writes are taken here again");
                }
                *current = None;
            }
        }
        metrics::gauge!("meridian_region_failed_over").set(f64::from(u8::from(current.is_some())));
    }

    /// The region taking this one's writes over, while this region is failed over.
    pub fn takeover(&self) -> Option<Arc<Takeover>> {
        self.takeover
            .read()
            .expect("takeover lock poisoned")
            .clone()
    }

    /// Writes `messages` to `topic`'s `partition` in the region taking over, at its
    /// partition leader; returns the base offset there. Never sent again past a broker
    /// that may have received it (it would be stored twice).
    pub async fn forward_produce(
        &self,
        takeover: &Takeover,
        (topic, partition): (&str, u32),
        messages: Vec<Message>,
        acks: Option<Acks>,
    ) -> Result<u64, RegionError> {
        let client = takeover
            .client
            .get_or_try_init(|| RegionClient::connect(&takeover.brokers))
            .await?;
        let request = v1::ProduceRequest {
            topic: topic.to_owned(),
            partition,
            messages: messages.into_iter().map(v1::Message::from).collect(),
            acks: match acks {
                Some(Acks::All) => v1::Acks::All,
                Some(Acks::Quorum) => v1::Acks::Quorum,
                Some(Acks::Leader) => v1::Acks::Leader,
                None => v1::Acks::Unspecified,
            } as i32,
            ..Default::default()
        };
        let answer = client
            .call_routed(&Stay, false, |mut c| {
                let request = request.clone();
                async move { c.produce(request).await }
            })
            .await?;
        metrics::counter!("meridian_kafka_forwarded_messages_total")
            .increment(request.messages.len() as u64);
        Ok(answer.base_offset)
    }
}
