//! Whether a broker serves what it is for (its `/readyz`): registered with the control
//! plane when its region is managed (routing then names it), and every log group it hosts
//! led or followed (a leader known here) with its committed records readable (the indexer
//! caught up), so a read there sees everything acknowledged.

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
            if !group.storage().is_caught_up() {
                return Err(format!(
                    "log group {g}: its committed records are not all readable yet"
                ));
            }
        }
        Ok(())
    }
}
