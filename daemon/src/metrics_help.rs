//! What each metric the daemons export means: the `# HELP` line of every series on their
//! `/metrics` endpoints (registered by `ops::start`). One entry per metric name the code
//! emits; `tests/tests/metrics_lint.rs` checks that none is missing.

/// `(metric name, help text)`, sorted by name.
pub const CATALOG: &[(&str, &str)] = &[
    (
        "meridian_acls",
        "ACL bindings the broker holds for its region, as read from the ACL topic.",
    ),
    (
        "meridian_acls_dropped_total",
        "ACL bindings read from the ACL topic but not kept because the broker already holds auth.acls_max of them.",
    ),
    (
        "meridian_append_disk_full_total",
        "Journal writes that failed because the disk was full; their appends were refused.",
    ),
    (
        "meridian_authorization_denied_total",
        "Requests refused by the ACLs (with auth.acls_enabled on), each also written to the audit log.",
    ),
    (
        "meridian_build_info",
        "1, labelled with the daemon and the version of its build (labels: daemon, version).",
    ),
    (
        "meridian_check_back_streams",
        "Open check-back streams of producers, which the broker asks how their in-doubt transactions ended.",
    ),
    (
        "meridian_check_backs_total",
        "Check-backs asking a live producer how an in-doubt transaction ended, by whether it answered (labels: answered).",
    ),
    (
        "meridian_compaction_carried_total",
        "Live messages of compacted partitions written again at the journal's end before retention deleted their segment.",
    ),
    (
        "meridian_compaction_undecodable_total",
        "Batches of compacted partitions whose messages did not decode while their keys were indexed; skipped.",
    ),
    (
        "meridian_console_actions_total",
        "Actions written to the console's audit log, such as logins and topic changes (labels: action).",
    ),
    (
        "meridian_console_tls_handshake_failures_total",
        "TLS handshakes on the console's HTTPS listener that failed.",
    ),
    (
        "meridian_consumer_lag_messages",
        "Messages between a consumer group's committed offset and the partition's end, as a replica of the partition sees it; at most 5,000 series per broker, the largest (labels: group, topic, partition).",
    ),
    (
        "meridian_control_broker_registrations_total",
        "Broker registrations the control plane accepted.",
    ),
    (
        "meridian_control_elections_won_total",
        "Times this control-plane process won the leader election.",
    ),
    (
        "meridian_control_leader",
        "1 while this control-plane process is the leader, else 0.",
    ),
    (
        "meridian_control_replicas_replaced_total",
        "Log group replica changes the control plane completed: a lost replica replaced or one moved to a less loaded broker.",
    ),
    (
        "meridian_control_topics_created_total",
        "Topics created through the control plane.",
    ),
    (
        "meridian_control_topics_deleted_total",
        "Topics deleted through the control plane.",
    ),
    (
        "meridian_credentials_dropped_total",
        "User credentials read from the credentials topic but not kept because the broker already holds auth.users_max users.",
    ),
    (
        "meridian_credentials_users",
        "Users with credentials (for Kafka SASL and MQTT logins) the broker holds, as read from the credentials topic.",
    ),
    (
        "meridian_delayed_fired_total",
        "Delayed-delivery timers fired: their messages appended to their destination partition when due.",
    ),
    (
        "meridian_delayed_pending",
        "Delayed-delivery timers not yet fired in a log group this broker leads (labels: log_group).",
    ),
    (
        "meridian_delayed_rearmed_total",
        "Pending delayed-delivery timers written again because retention would soon delete their records.",
    ),
    (
        "meridian_delayed_scheduled_total",
        "Produces with a deliver-at time accepted and held as delayed-delivery timers.",
    ),
    (
        "meridian_disk_free_bytes",
        "Bytes free for the broker on the disk holding its data directory.",
    ),
    (
        "meridian_disk_total_bytes",
        "Bytes in all on the disk holding the broker's data directory.",
    ),
    (
        "meridian_fetch_messages_total",
        "Messages returned to native (gRPC) consumers' fetches.",
    ),
    (
        "meridian_group_commit_bytes",
        "Bytes written to a log group's journal per group commit (one write and one sync).",
    ),
    (
        "meridian_group_commit_records",
        "Records written per group commit of a log group's journal.",
    ),
    (
        "meridian_group_commit_seconds",
        "Seconds each group commit of a log group's journal took to write and sync its appends.",
    ),
    (
        "meridian_grpc_connections",
        "Open gRPC connections the listener admitted.",
    ),
    (
        "meridian_grpc_connections_refused_total",
        "gRPC connections refused for the listener's connection limits (in total or per client address).",
    ),
    (
        "meridian_grpc_denied_total",
        "gRPC calls refused (permission denied, audited) because the caller may not make them.",
    ),
    (
        "meridian_grpc_errors_total",
        "gRPC calls the broker answered with an error, by gRPC status code (labels: code).",
    ),
    (
        "meridian_grpc_half_sent_total",
        "gRPC requests failed because their body stopped arriving for the idle timeout.",
    ),
    (
        "meridian_grpc_idle_closed_total",
        "gRPC connections closed after carrying no request for the idle timeout.",
    ),
    (
        "meridian_grpc_redirects_total",
        "gRPC calls answered 'not leader here' with where the leader is; clients follow them, they are not errors (labels: code).",
    ),
    (
        "meridian_grpc_tls_handshake_failures_total",
        "TLS handshakes on the gRPC listener that failed.",
    ),
    (
        "meridian_grpc_unauthenticated_total",
        "gRPC calls refused as unauthenticated: an unknown token, or no credentials where they are required.",
    ),
    (
        "meridian_journal_segments_deleted_total",
        "Journal segments deleted by retention.",
    ),
    (
        "meridian_kafka_authentication_failures_total",
        "Kafka SASL authentications that failed.",
    ),
    (
        "meridian_kafka_authentications_total",
        "Kafka clients that authenticated with SASL.",
    ),
    (
        "meridian_kafka_bad_frames_total",
        "Kafka connections closed for a request frame whose length is too small or too large.",
    ),
    (
        "meridian_kafka_batches_served_as_stored_total",
        "Record batches served to Kafka fetches as stored, without encoding them again.",
    ),
    ("meridian_kafka_connections", "Open Kafka connections."),
    (
        "meridian_kafka_connections_refused_total",
        "Kafka connections refused (closed at once) for the listener's connection limits (in total or per client address).",
    ),
    (
        "meridian_kafka_duplicate_batches_total",
        "Kafka produce batches that duplicated ones already stored (idempotent resends) and were not written again.",
    ),
    (
        "meridian_kafka_forwarded_messages_total",
        "Kafka-produced messages forwarded to the region taking over while this region is failed over.",
    ),
    (
        "meridian_kafka_groups",
        "Kafka consumer groups the broker's coordinator knows.",
    ),
    (
        "meridian_kafka_groups_refused_total",
        "New Kafka consumer groups refused because the broker already knows kafka.groups_max of them.",
    ),
    (
        "meridian_kafka_idle_closed_total",
        "Kafka connections closed for being idle, or for a request half-sent, past the idle timeout.",
    ),
    (
        "meridian_kafka_produce_partitions_total",
        "Partitions answered in Kafka Produce requests, written or refused.",
    ),
    (
        "meridian_kafka_producer_ids_total",
        "Producer ids or new epochs handed to non-transactional Kafka producers by InitProducerId.",
    ),
    (
        "meridian_kafka_requests_total",
        "Kafka requests answered, by API (labels: api).",
    ),
    (
        "meridian_kafka_throttled_total",
        "Kafka requests throttled for going over a byte-rate quota, by quota (labels: kind).",
    ),
    (
        "meridian_kafka_tls_handshake_failures_total",
        "TLS handshakes on the Kafka listener that failed.",
    ),
    (
        "meridian_kafka_unauthenticated_requests_total",
        "Kafka connections closed for a request sent before SASL authentication.",
    ),
    (
        "meridian_log_group_follower_lag_bytes",
        "Journal bytes a follower holds less than this broker, where this broker leads the log group; 0 where it does not (labels: group, follower).",
    ),
    (
        "meridian_log_group_journal_bytes",
        "Bytes of a log group's journal on this broker, between its start and its end (labels: group).",
    ),
    (
        "meridian_log_group_leader",
        "1 where this broker leads the log group (raft leader or master), else 0 (labels: group).",
    ),
    (
        "meridian_log_group_term",
        "A log group's leadership epoch as this broker knows it: the raft term or master-slave epoch (labels: group).",
    ),
    (
        "meridian_log_group_uncommitted_bytes",
        "Bytes of a log group's journal on this broker past its commit watermark (labels: group).",
    ),
    (
        "meridian_log_groups_leaderless",
        "Log groups this broker hosts that have no leader it knows of.",
    ),
    (
        "meridian_log_groups_under_replicated",
        "Log groups this broker leads with fewer replicas in sync than replicas.",
    ),
    (
        "meridian_master_slave_role_changes_total",
        "Role changes (a new epoch and master) of the master-slave log groups the broker replicates.",
    ),
    (
        "meridian_mirror_acked_seq",
        "Highest origin seq the peer region has acknowledged holding (labels: peer, group).",
    ),
    (
        "meridian_mirror_append_batches",
        "Shipped batches appended per successful append call to this region's brokers.",
    ),
    (
        "meridian_mirror_append_seconds",
        "Seconds to append one run of shipped batches to this region, retries included (labels: origin).",
    ),
    (
        "meridian_mirror_applied_batches_total",
        "Shipped batches appended to this region, duplicates not counted (labels: origin, group).",
    ),
    (
        "meridian_mirror_applied_commits_total",
        "Consumer group commits of an origin region merged into this region (labels: origin, group).",
    ),
    (
        "meridian_mirror_applied_messages_total",
        "Messages of shipped batches appended to this region, duplicates not counted (labels: origin, group).",
    ),
    (
        "meridian_mirror_applied_seq",
        "Highest origin seq this region holds and has acknowledged to the sender (labels: origin, group).",
    ),
    (
        "meridian_mirror_apply_errors_total",
        "Failed attempts to append shipped batches or merge commits here; each is retried (labels: origin, group).",
    ),
    (
        "meridian_mirror_connections_refused_total",
        "Inbound mirror QUIC connections refused for the listener's connection limits.",
    ),
    (
        "meridian_mirror_connects_total",
        "QUIC connections made to a peer region's mirrors (labels: peer).",
    ),
    (
        "meridian_mirror_control_reachable",
        "1 when the control plane answered the mirror's last refresh of its views, else 0.",
    ),
    (
        "meridian_mirror_dropped_batches_total",
        "Shipped batches not appended because their topic was deleted or removed from this region since the origin read them (labels: origin, group).",
    ),
    (
        "meridian_mirror_duplicates_total",
        "Shipped batches this region already held, skipped as duplicates (labels: origin, group).",
    ),
    (
        "meridian_mirror_in_messages_total",
        "Messages of other regions' shipped batches the broker appended for the mirror, duplicates not counted.",
    ),
    (
        "meridian_mirror_lag_seconds",
        "Seconds from a batch's append in its origin region to its append here, per applied batch (labels: origin).",
    ),
    (
        "meridian_mirror_link_held",
        "1 while this mirror holds the claim to ship to a peer region, else 0 (labels: peer).",
    ),
    (
        "meridian_mirror_link_up",
        "1 while this mirror's QUIC link to a peer region is up, else 0 (labels: peer).",
    ),
    (
        "meridian_mirror_read_errors_total",
        "Failed reads of local batches to ship to a peer region; each is retried (labels: peer, group).",
    ),
    (
        "meridian_mirror_read_lag_seconds",
        "Seconds from a local batch's append to the mirror reading it for shipping, per batch (labels: peer).",
    ),
    (
        "meridian_mirror_shipped_batches_total",
        "Batches shipped to a peer region's mirror (labels: peer, group).",
    ),
    (
        "meridian_mirror_shipped_bytes_total",
        "Bytes of record frames shipped to a peer region's mirror (labels: peer, group).",
    ),
    (
        "meridian_mirror_shipped_commits_total",
        "Consumer group commits shipped to a peer region's mirror (labels: peer, group).",
    ),
    (
        "meridian_mirror_shipped_messages_total",
        "Messages in the batches shipped to a peer region's mirror (labels: peer, group).",
    ),
    (
        "meridian_mirror_shipped_seq",
        "Highest origin seq shipped to a peer region (labels: peer, group).",
    ),
    (
        "meridian_mirror_stalled_seconds",
        "Seconds an inbound stream has failed to apply here, by why; 0 once it applies again (labels: origin, group, reason).",
    ),
    (
        "meridian_mqtt_authentication_failures_total",
        "MQTT CONNECTs refused for a missing user name or a wrong user name or password.",
    ),
    (
        "meridian_mqtt_bad_packets_total",
        "MQTT connections closed for a malformed or oversized packet.",
    ),
    (
        "meridian_mqtt_connections",
        "Open MQTT connections (TCP and WebSocket).",
    ),
    (
        "meridian_mqtt_connections_refused_total",
        "MQTT connections refused for the listener's connection limits (in total or per client address).",
    ),
    (
        "meridian_mqtt_connects_total",
        "MQTT CONNECTs accepted: a session started or resumed.",
    ),
    (
        "meridian_mqtt_deliveries_dropped_total",
        "PUBLISHes to MQTT subscribers dropped for being over the client's maximum packet size.",
    ),
    (
        "meridian_mqtt_deliveries_total",
        "PUBLISH packets sent to MQTT subscribers.",
    ),
    (
        "meridian_mqtt_publishes_received_total",
        "PUBLISH packets received from MQTT clients.",
    ),
    (
        "meridian_mqtt_publishes_refused_total",
        "PUBLISHes from MQTT clients refused or not stored.",
    ),
    (
        "meridian_mqtt_retained_dropped_total",
        "Retained MQTT messages not kept because the broker already holds mqtt.retained_max of them.",
    ),
    (
        "meridian_mqtt_retained_messages",
        "Retained MQTT messages the broker holds.",
    ),
    (
        "meridian_mqtt_sessions",
        "MQTT sessions the broker holds, connected or kept for their expiry.",
    ),
    (
        "meridian_mqtt_stored_sessions",
        "Persistent MQTT session records of the region the broker holds, as read from the sessions topic.",
    ),
    (
        "meridian_mqtt_stored_sessions_dropped_total",
        "Persistent MQTT session records not kept because the broker already holds its most of them.",
    ),
    (
        "meridian_mqtt_tls_handshake_failures_total",
        "TLS handshakes on the MQTT listener that failed.",
    ),
    (
        "meridian_mqtt_wills_total",
        "MQTT will messages published for clients that went away.",
    ),
    (
        "meridian_partition_end_offset",
        "One past a partition's last visible message on this replica; its rate() is the partition's message rate (labels: topic, partition).",
    ),
    (
        "meridian_partition_start_offset",
        "A partition's earliest offset on this replica (labels: topic, partition).",
    ),
    (
        "meridian_produce_bytes_total",
        "Bytes of messages produced to partitions by any protocol, duplicates not counted.",
    ),
    (
        "meridian_produce_duplicate_batches_total",
        "Produced batches that duplicated ones already stored (idempotent resends) and were not written again.",
    ),
    (
        "meridian_produce_messages_total",
        "Messages produced to partitions by any protocol, duplicates not counted.",
    ),
    (
        "meridian_producer_states_evicted_total",
        "Idempotent producer states evicted, least recently written first, to stay within producers_max.",
    ),
    (
        "meridian_quotas_dropped_total",
        "Client quota entries not kept because the broker already holds auth.quotas_max of them.",
    ),
    (
        "meridian_raft_disk_full_retries_total",
        "Raft storage writes retried because the disk was full.",
    ),
    (
        "meridian_raft_heartbeats_per_message",
        "Raft heartbeats (of many log groups) sent together in one message to a peer broker.",
    ),
    (
        "meridian_region_failed_over",
        "1 while this region is failed over (its Kafka writes go to the region taking over), else 0.",
    ),
    (
        "meridian_region_producer_refused_total",
        "Records of the broker's own producer (MQTT publishes, sessions, retained) refused because a partition's write queue was full.",
    ),
    (
        "meridian_reloads_total",
        "Watched files (the tokens file, a TLS certificate) read again after they changed (labels: what).",
    ),
    (
        "meridian_replica_resets_total",
        "Times a replica started over at its source's first position because retention deleted the records it needed.",
    ),
    (
        "meridian_replica_truncations_total",
        "Divergent journal tails a replica truncated to follow its source.",
    ),
    (
        "meridian_retention_offsets_carried_total",
        "Consumer offsets committed again before retention deleted the segment holding them.",
    ),
    (
        "meridian_sync_batch_requests",
        "Group commits' sync requests made durable together per sync of the shared sync thread.",
    ),
    (
        "meridian_sync_seconds",
        "Seconds per sync of the shared sync thread (one syncfs, or the fdatasyncs).",
    ),
    (
        "meridian_tls_peer_name_refused_total",
        "TLS client certificates refused because they are not valid for the peer name required.",
    ),
];
