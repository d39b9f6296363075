//! Which connections a listener takes: at most `connections_max` open at once and
//! `connections_per_address_max` from one client address (Kafka's `max.connections` and
//! `max.connections.per.ip`). A decision on counts, without I/O: the listener asks before it
//! serves a connection and holds the [`Ticket`] while it does. The Kafka listener and the
//! daemons' gRPC listeners share it; each names its own configuration keys, so a
//! refusal says which key to raise.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections, in all and by client address.
#[derive(Debug)]
pub struct Admission {
    /// The listener, as refusals name it (`Kafka`, `gRPC`).
    listener: &'static str,
    /// Its configuration keys' prefix (`kafka.`, `grpc.`, or none).
    prefix: &'static str,
    max: usize,
    per_address_max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Addresses with at least one open connection (so at most `max` entries).
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The listener has `count` connections open, its limit.
    #[error(
        "{count} {listener} connections are open, the listener's limit ({prefix}connections_max)"
    )]
    Listener {
        /// The listener (`Kafka`, `gRPC`).
        listener: &'static str,
        /// Its configuration keys' prefix.
        prefix: &'static str,
        /// Connections open.
        count: usize,
    },
    /// `address` has `count` connections open, the limit per address.
    #[error(
        "{count} {listener} connections are open from {address}, the limit per client address ({prefix}connections_per_address_max)"
    )]
    Address {
        /// The listener (`Kafka`, `gRPC`).
        listener: &'static str,
        /// Its configuration keys' prefix.
        prefix: &'static str,
        /// The client address.
        address: IpAddr,
        /// Connections open from it.
        count: usize,
    },
}

/// A served connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    /// Counts for `listener` (as refusals name it) configured by keys starting `prefix`.
    pub fn new(
        listener: &'static str,
        prefix: &'static str,
        max: usize,
        per_address_max: usize,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            listener,
            prefix,
            max,
            per_address_max,
            open: Mutex::default(),
        })
    }

    /// A ticket for one more connection from `address`, or why not.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refused> {
        let (listener, prefix) = (self.listener, self.prefix);
        let mut open = self.open.lock().expect("admission lock poisoned");
        if open.total >= self.max {
            return Err(Refused::Listener {
                listener,
                prefix,
                count: open.total,
            });
        }
        let count = open.by_address.get(&address).copied().unwrap_or(0);
        if count >= self.per_address_max {
            return Err(Refused::Address {
                listener,
                prefix,
                address,
                count,
            });
        }
        open.total += 1;
        *open.by_address.entry(address).or_insert(0) += 1;
        Ok(Ticket {
            admission: self.clone(),
            address,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("admission lock poisoned").total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().expect("admission lock poisoned");
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_gets_its_share_and_others_the_rest() {
        let a = Admission::new("Kafka", "kafka.", 5, 2);
        let t1 = a.admit(ip(1)).unwrap();
        let _t2 = a.admit(ip(1)).unwrap();
        assert_eq!(
            a.admit(ip(1)).unwrap_err(),
            Refused::Address {
                listener: "Kafka",
                prefix: "kafka.",
                address: ip(1),
                count: 2
            }
        );
        let _t3 = a.admit(ip(2)).unwrap();
        // A closed connection gives its place back.
        drop(t1);
        let _t4 = a.admit(ip(1)).unwrap();
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn the_listener_limit_holds_across_addresses() {
        let a = Admission::new("gRPC", "grpc.", 3, 3);
        let tickets: Vec<Ticket> = (1..=3).map(|i| a.admit(ip(i)).unwrap()).collect();
        let refused = a.admit(ip(9)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "3 gRPC connections are open, the listener's limit (grpc.connections_max)"
        );
        drop(tickets);
        assert_eq!(a.open(), 0);
        assert!(
            a.open.lock().unwrap().by_address.is_empty(),
            "no address kept"
        );
        a.admit(ip(9)).unwrap();
    }
}
