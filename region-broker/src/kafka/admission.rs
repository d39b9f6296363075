//! Which Kafka connections the listener takes: at most `connections_max` open at once and
//! `connections_per_address_max` from one client address (Kafka's `max.connections` and
//! `max.connections.per.ip`). A decision on counts, without I/O: the listener asks before it
//! serves a connection and holds the [`Ticket`] while it does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections, in all and by client address.
#[derive(Debug)]
pub(crate) struct Admission {
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
pub(crate) enum Refused {
    #[error("{0} Kafka connections are open, the listener's limit (kafka.connections_max)")]
    Listener(usize),
    #[error(
        "{count} Kafka connections are open from {address}, the limit per client address (kafka.connections_per_address_max)"
    )]
    Address { address: IpAddr, count: usize },
}

/// A served connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    pub(crate) fn new(max: usize, per_address_max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            per_address_max,
            open: Mutex::default(),
        })
    }

    /// A ticket for one more connection from `address`, or why not.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refused> {
        let mut open = self.open.lock().expect("admission lock poisoned");
        if open.total >= self.max {
            return Err(Refused::Listener(open.total));
        }
        let count = open.by_address.get(&address).copied().unwrap_or(0);
        if count >= self.per_address_max {
            return Err(Refused::Address { address, count });
        }
        open.total += 1;
        *open.by_address.entry(address).or_insert(0) += 1;
        Ok(Ticket {
            admission: self.clone(),
            address,
        })
    }

    /// Open connections now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
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
        let a = Admission::new(5, 2);
        let t1 = a.admit(ip(1)).unwrap();
        let _t2 = a.admit(ip(1)).unwrap();
        assert_eq!(
            a.admit(ip(1)).unwrap_err(),
            Refused::Address {
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
        let a = Admission::new(3, 3);
        let tickets: Vec<Ticket> = (1..=3).map(|i| a.admit(ip(i)).unwrap()).collect();
        assert_eq!(a.admit(ip(9)).unwrap_err(), Refused::Listener(3));
        drop(tickets);
        assert_eq!(a.open(), 0);
        assert!(
            a.open.lock().unwrap().by_address.is_empty(),
            "no address kept"
        );
        a.admit(ip(9)).unwrap();
    }
}
