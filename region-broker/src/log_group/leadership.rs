//! Moving a raft group's leadership to another voter (Kafka's preferred leader election,
//! `meridian log-group elect`): which voter a group prefers ([`preference_order`], pure),
//! and the hand-over itself ([`HostedGroup::transfer_leadership`]), on the leader.
//!
//! A group's preferred replica is its first replica in [`preference_order`]: in a managed
//! region the control plane's placement order (its placement spreads preferred leaders
//! over the brokers); in a static region the voters sorted by broker id and rotated by the
//! group id. Either way the groups of a region prefer its brokers in turn, so electing
//! every group's preferred replica spreads leadership instead of piling it on one broker
//! (Kafka's assignment rotates first replicas the same way). Kafka's Metadata lists
//! replicas in this order, so a client's "first replica" is the one named here.
//!
//! The hand-over is openraft's: the leader stops accepting writes, tells every voter, and
//! the named one elects itself once it holds the leader's whole log (the others stop
//! honouring the old leader's lease, so they vote at once). Nothing committed can be lost:
//! raft grants the vote only to a replica holding every committed entry.

use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver;

use super::{HostedGroup, LogGroupError};

/// How often the hand-over looks for the new leader.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// How often the hand-over is offered again while the voter has not taken it.
const OFFER_EVERY: Duration = Duration::from_millis(100);

/// `voters` in the order `group` prefers them; the first is the group's preferred
/// replica. In a managed region `placed` is the control plane's placement of the group
/// (its first replica the preferred leader the placement spread): its voters come in that
/// order, any others after them. Otherwise (a static region) the voters sorted by broker
/// id, rotated by the group id.
pub fn preference_order(group: u32, mut voters: Vec<u32>, placed: Option<&[u32]>) -> Vec<u32> {
    voters.sort_unstable();
    voters.dedup();
    if let Some(placed) = placed.filter(|p| !p.is_empty()) {
        let mut ordered: Vec<u32> = placed
            .iter()
            .copied()
            .filter(|b| voters.contains(b))
            .collect();
        ordered.dedup();
        ordered.extend(voters.iter().filter(|b| !placed.contains(b)));
        return ordered;
    }
    if !voters.is_empty() {
        let first = group as usize % voters.len();
        voters.rotate_left(first);
    }
    voters
}

/// What a hand-over did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transferred {
    /// The named voter led the group already: nothing changed.
    AlreadyLeading(u32),
    /// The named voter leads the group now.
    Moved(u32),
}

impl HostedGroup {
    /// Hands the group's leadership (held here) to voter `to` and waits up to `wait` for
    /// it to be elected. Refused when the group does not replicate by raft, `to` is not a
    /// voter, or `to` is not in sync (it would first have to catch up, and a leader-less
    /// group is what a hand-over must not cause).
    pub async fn transfer_leadership(
        &self,
        to: u32,
        wait: Duration,
    ) -> Result<Transferred, LogGroupError> {
        let raft = self.require_raft(
            "a master-slave group changes master by failover (meridian log-group failover)",
        )?;
        self.check_leader()?;
        let voters = self.voters();
        if !voters.contains(&to) {
            return Err(LogGroupError::Invalid(format!(
                "broker {to} is not a voting replica of log group {} (its voters: {voters:?}); add it first: meridian log-group add-replica {} {to}",
                self.id, self.id
            )));
        }
        if to == self.me {
            return Ok(Transferred::AlreadyLeading(to));
        }
        let in_sync = self.in_sync().unwrap_or_default();
        if !in_sync.contains(&to) {
            return Err(LogGroupError::Election {
                message: format!(
                    "broker {to} is not in sync with log group {} (in sync: {in_sync:?}): it may be down or behind; the leader stays broker {}",
                    self.id, self.me
                ),
                timed_out: false,
            });
        }
        tracing::info!(group = self.id, to, "handing log group leadership over");
        let deadline = tokio::time::Instant::now() + wait;
        let mut next_offer = tokio::time::Instant::now();
        loop {
            let leader = raft.metrics().borrow_watched().current_leader;
            match leader {
                Some(l) if l == u64::from(to) => return Ok(Transferred::Moved(to)),
                // Another voter won the election (it timed out first): the hand-over is over.
                Some(l) if l != u64::from(self.me) => {
                    return Err(LogGroupError::Election {
                        message: format!(
                            "log group {}: broker {l} was elected instead of broker {to} (it timed out first); elect again to move it",
                            self.id
                        ),
                        timed_out: false,
                    });
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LogGroupError::Election {
                    message: format!(
                        "log group {} handed over to broker {to}, which was not elected within {} ms (leader now: {}); raft elects a leader by itself: look again with meridian log-group list",
                        self.id,
                        wait.as_millis(),
                        leader.map_or("none yet".to_owned(), |l| format!("broker {l}"))
                    ),
                    timed_out: true,
                });
            }
            // Offered again while this broker still leads: the voter ignores an offer whose
            // log end it does not hold yet (in sync allows some lag), and each offer
            // carries the log's end as it is now (writes stopped at the first offer).
            if leader == Some(u64::from(self.me)) && tokio::time::Instant::now() >= next_offer {
                raft.trigger()
                    .transfer_leader(u64::from(to))
                    .await
                    .map_err(|e| {
                        LogGroupError::Replication(format!("log group {}: {e}", self.id))
                    })?;
                next_offer = tokio::time::Instant::now() + OFFER_EVERY;
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preference_order;

    #[test]
    fn groups_prefer_the_brokers_in_turn() {
        let firsts: Vec<u32> = (0..6)
            .map(|g| preference_order(g, vec![3, 1, 2], None)[0])
            .collect();
        assert_eq!(firsts, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(preference_order(4, vec![3, 1, 2], None), vec![2, 3, 1]);
    }

    #[test]
    fn the_order_holds_whatever_order_the_voters_come_in() {
        assert_eq!(
            preference_order(7, vec![5, 9, 2, 9], None),
            preference_order(7, vec![2, 5, 9], None)
        );
        assert_eq!(preference_order(7, vec![], None), Vec::<u32>::new());
        assert_eq!(preference_order(7, vec![4], None), vec![4]);
    }

    #[test]
    fn a_placement_orders_the_voters_it_names() {
        assert_eq!(
            preference_order(0, vec![1, 2, 3], Some(&[3, 1, 2])),
            vec![3, 1, 2]
        );
        // A voter the placement does not name yet (a replica being added) comes last; a
        // placed broker that is no voter (being removed) is left out.
        assert_eq!(
            preference_order(0, vec![1, 2, 4], Some(&[2, 3, 1])),
            vec![2, 1, 4]
        );
        // An empty placement is none.
        assert_eq!(preference_order(1, vec![1, 2], Some(&[])), vec![2, 1]);
    }
}
