//! Whether a broker serves what it is for (its `/readyz`): registered with the control
//! plane when its region is managed (routing then names it), and every log group it hosts
//! led or followed (a leader known here) with its committed records readable (the indexer
//! caught up), so a read there sees everything acknowledged; and every raft group it
//! follows caught up with its leader: in the in-sync set (Kafka's ISR) the leader last
//! announced. A broker back from a pause or a crash is not ready while it is behind, so a
//! rolling restart waits for it before it takes the next broker down.

use super::Broker;

impl Broker {
    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        let managed = !self.config.control.is_empty();
        if managed
            && !self
                .view
                .read()
                .expect("view lock poisoned")
                .is_registered()
        {
            return Err("not registered with the control plane yet".to_owned());
        }
        for (g, group) in self.log_groups() {
            let state = group.state();
            if state.strategy != "none" && state.leader.is_none() {
                return Err(format!("log group {g}: no leader is known here yet"));
            }
            let me = self.config.broker_id;
            if state.strategy == "raft"
                && state.leader.is_some_and(|l| l != me)
                && !self.announced_in_sync(g).is_some_and(|s| s.contains(&me))
            {
                return Err(format!(
                    "log group {g}: catching up with its leader (broker {}): not in the in-sync replicas it announced",
                    state.leader.unwrap_or_default()
                ));
            }
            if !group.storage().is_caught_up() {
                return Err(format!(
                    "log group {g}: its committed records are not all readable yet"
                ));
            }
        }
        Ok(())
    }

    /// What log group `g`'s raft leader last announced as in sync, when recent.
    fn announced_in_sync(&self, g: u32) -> Option<Vec<u32>> {
        let r = self.replication.get()?;
        r.transport.announced().get(g, std::time::Instant::now())
    }
}
