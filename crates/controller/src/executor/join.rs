//! The joining steps: from a guest with an address to a Ready, labelled
//! node (DeliverConfig, WaitForNode, Label). A node is waited for and
//! labelled only once it shows it runs on the claim's VM: a node of
//! another machine named like the claim fails the claim, untouched.

use std::net::IpAddr;

use tidepool_core::{Phase, duration::Human};

use super::identity::NodeCheck;
use super::{Executor, Outcome, POLL, Work, permanent};
use crate::claim::Condition;
use crate::ports::{ClaimStore, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind};

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// DeliverConfig: hands the machine configuration to the guest at its
    /// recorded address; a delivery refused for good fails the claim.
    pub(super) async fn deliver_config(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let s = work.status();
        let ip: IpAddr = s.ip.ok_or_else(|| permanent("no address recorded"))?;
        let meta = self
            .metadata(work.claim)
            .map_err(|e| permanent(e.to_string()))?;
        match self.joiner.deliver(work.claim, ip, &meta).await {
            Ok(()) => {}
            Err(e) if e.kind == ProviderErrorKind::Permanent => {
                return Ok(Outcome::Fail(e.message));
            }
            Err(e) => return Err(e),
        }
        Ok(self.reached(s, Condition::ConfigDelivered))
    }

    /// WaitForNode: waits for the node to register and turn Ready; fails
    /// after the configured registration timeout, or at once when the node
    /// of the claim's name runs on another machine.
    pub(super) async fn wait_for_node(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        let name = work.name();
        let timeout = self.config.join.registration_timeout;
        let ready = self.nodes.node_ready(name).await?;
        if ready.is_some() {
            match self.check_node(work.claim).await? {
                NodeCheck::NotOurs(why) => return Ok(Outcome::Fail(why)),
                NodeCheck::Unreported(what)
                    if self.since(&s, Condition::ConfigDelivered) <= timeout =>
                {
                    return Ok(Outcome::Wait(POLL, what));
                }
                NodeCheck::Unreported(what) => {
                    return Ok(Outcome::Fail(format!("{what} within {}", Human(timeout))));
                }
                NodeCheck::Ours | NodeCheck::Absent => {}
            }
        }
        match ready {
            Some(true) => {
                s.node_name = Some(name.to_owned());
                Ok(self.reached(s, Condition::NodeReady))
            }
            _ if self.since(&s, Condition::ConfigDelivered) > timeout => Ok(Outcome::Fail(
                format!("node {name} was not Ready within {}", Human(timeout)),
            )),
            Some(false) => Ok(Outcome::Wait(POLL, format!("node {name} to turn Ready"))),
            None => Ok(Outcome::Wait(POLL, format!("node {name} to register"))),
        }
    }

    /// Label: applies the node's labels and taints (once more checking the
    /// node is the claim's), moves the worker on to Ready and announces it.
    pub(super) async fn label(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        let name = work.name();
        let claim = work.claim;
        let meta = self.metadata(claim).map_err(|e| permanent(e.to_string()))?;
        match self.check_node(claim).await? {
            NodeCheck::Ours => {}
            NodeCheck::NotOurs(why) | NodeCheck::Unreported(why) => {
                return Ok(Outcome::Fail(why));
            }
            NodeCheck::Absent => {
                return Ok(Outcome::Fail(format!("node {name} is gone")));
            }
        }
        self.nodes.ensure_metadata(name, &meta).await?;
        self.mark(&mut s, Condition::Labelled);
        s.lifecycle = s.lifecycle.advance(Phase::Ready).map_err(permanent)?;
        let host = s.vm.as_ref().map_or("?", |v| v.node.as_str());
        let took = Human(self.since(&s, Condition::VmidAllocated));
        let message = format!(
            "worker of pool {} ({}) on host {host} is Ready and labelled, {took} after it was requested",
            claim.spec.pool, claim.spec.size
        );
        self.nodes.announce(name, "WorkerReady", &message).await;
        Ok(Outcome::done(s))
    }
}
