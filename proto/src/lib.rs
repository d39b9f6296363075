//! Wire types shared by every Meridian crate.
//!
//! Two kinds of thing live here: the generated gRPC API (`v1`, behind the default `grpc`
//! feature, with `auth`: the credentials every call carries), and pure codecs over bytes (`record`: the journal record; `batch`: the message
//! batch a record carries; `origin`: where a mirrored batch was first written; `producer`: the
//! idempotent producer of a batch; `mirror`: the
//! frames of the link between regions' mirrors; `settings`: a topic's acks and replication
//! strategy, spelled one way everywhere; `topic_config`: a topic's own configuration under
//! Kafka's names). Nothing in this crate does I/O or depends on a runtime; codecs
//! take and return buffers and are property-tested and fuzzed (`fuzz/`) on their own.
#![warn(missing_docs)]

#[cfg(feature = "grpc")]
pub mod auth;
pub mod batch;
pub mod human;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mirror;
#[cfg(feature = "grpc")]
pub mod mirror_links;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod names;
pub mod origin;
pub mod partition;
pub mod producer;
pub mod record;
pub mod settings;
pub mod topic_config;

/// The native gRPC API, generated from `proto/meridian.proto` by `tonic-prost-build`.
///
/// The generated file is committed so that building Meridian needs no `protoc`; the
/// `codegen_is_fresh` test regenerates it and fails when the committed copy is stale.
#[cfg(feature = "grpc")]
#[allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]
pub mod v1 {
    include!("generated/meridian.v1.rs");
}

#[cfg(feature = "grpc")]
impl v1::TopicPartitions {
    /// `(topic, partition)` pairs, sorted by topic, grouped one entry per topic.
    pub fn group<'a>(tps: impl IntoIterator<Item = &'a (String, u32)>) -> Vec<v1::TopicPartitions> {
        let mut out: Vec<v1::TopicPartitions> = Vec::new();
        for (topic, p) in tps {
            match out.last_mut() {
                Some(last) if last.topic == *topic => last.partitions.push(*p),
                _ => out.push(v1::TopicPartitions {
                    topic: topic.clone(),
                    partitions: vec![*p],
                }),
            }
        }
        out
    }

    /// The `(topic, partition)` pairs.
    pub fn pairs(list: Vec<v1::TopicPartitions>) -> impl Iterator<Item = (String, u32)> {
        list.into_iter().flat_map(|t| {
            let topic = t.topic;
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
    }
}
