//! Transactions: two-phase messages with check-back (native) and Kafka transactions, on one
//! coordinator.
//!
//! The design, as Kafka keeps it: a transaction is a transactional id's producer (id and
//! epoch) writing batches marked transactional into any partitions of the region, then
//! ending it; the coordinator of that id (a log group chosen by the id) records every state
//! change in its raft log *before* acting on it, writes a commit or abort marker into every
//! participating partition, and records the transaction complete. Readers that ask for
//! committed data stop at a partition's last stable offset (the first offset of its oldest
//! open transaction) and skip aborted batches. A native transaction left in doubt past its
//! timeout is checked back with its producer group, a bounded number of times, then given
//! the configured default outcome.
//!
//! [`coordinator`] is the coordinator's decision core: requests and the clock in, records
//! to write and actions out, no I/O; it is what every replica replays from the log.

pub mod coordinator;
