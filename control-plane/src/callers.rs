//! Who may call what on the control plane's API, by the caller's principal
//! (`meridian_daemon::listener::authenticate`; no tokens file: anyone may call anything):
//!
//! - a broker's registration, heartbeats and deregistration only from that region's
//!   brokers (`Broker:REGION`);
//! - a mirror link's lease only from the mirror of the region it sends from
//!   (`Mirror:REGION`);
//! - changes (regions made, deleted, failed over and restored; topics made, altered and
//!   deleted) from the console and the admins (`admins`; none named: every user);
//! - reads from any caller it let in.

use meridian_daemon::listener::authenticate::Caller;
use meridian_security::tokens::Principal;
use tonic::{Request, Status};

use crate::api::ControlService;

impl ControlService {
    /// Refuses unless the caller is a broker of `region`.
    pub(crate) fn broker_of<T>(&self, request: &Request<T>, region: &str) -> Result<(), Status> {
        let broker = Principal::Broker(region.to_owned());
        Caller::of(request).require(
            |p| *p == broker,
            &format!("register or renew a broker of region {region}"),
            &broker.to_string(),
        )
    }

    /// Refuses unless the caller is the mirror of `region`.
    pub(crate) fn mirror_of<T>(&self, request: &Request<T>, region: &str) -> Result<(), Status> {
        let mirror = Principal::Mirror(region.to_owned());
        Caller::of(request).require(
            |p| *p == mirror,
            &format!("claim a mirror link from region {region}"),
            &mirror.to_string(),
        )
    }

    /// Refuses a change (`what`) unless the caller is the console or an admin; allowed
    /// changes are audited.
    pub(crate) fn admin<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        let caller = Caller::of(request);
        let admins = &self.admins;
        caller.require(
            |p| match p {
                Principal::Console => true,
                Principal::User(_) => admins.is_empty() || admins.contains(&p.to_string()),
                _ => false,
            },
            what,
            "the console and the admins",
        )?;
        let who = caller
            .principal()
            .map_or_else(|| "an unchecked caller".to_owned(), ToString::to_string);
        tracing::info!(target: "audit", principal = %who, action = what, "allowed");
        Ok(())
    }
}
