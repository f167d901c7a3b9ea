//! The service layer: the operations an operator or an agent performs on
//! workers — list, show, provision, drain, destroy, extend TTL, cordon,
//! uncordon. The CLI, the MCP server and the HTTP API all call these, so the
//! validation and safety rules of spec §8 live here once.
//!
//! Mutating operations only change the durable claim (its intent, TTL); the
//! executor carries them out. Every mutating call writes an audit record
//! (who, what, target, result) to the `tidepool::audit` log target.
//!
//! Workers come back as core's views ([`WorkerInfo`], with a typed
//! [`WorkerPhase`]), the very documents the front-ends print; their time
//! left is counted on the executor's clock.

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tidepool_core::config::Pool;
use tidepool_core::conventions::{WORKER_SUFFIX_LEN, worker_name};
use tidepool_core::jiff::Timestamp;
use tidepool_core::pool::WorkerType;
use tidepool_core::safety::{
    self, DestroyTarget, Refusal, RequestError, check_bounds, check_destroy, did_you_mean,
};
use tidepool_core::ttl::{Ttl, TtlError};
use tidepool_core::view::{WorkerInfo, WorkerPhase, expires_in};
use tidepool_core::{Phase, PoolKind};
use tracing::info;

use crate::claim::{Claim, ClaimSpec, ClaimStatus, Intent};
use crate::executor::Executor;
use crate::pools::{PoolRecordError, admit, release};
use crate::ports::{
    AuditEntry, AuditResult, ClaimStore, Hypervisor, Joiner, NodeView, Nodes, ProviderError,
    ProviderErrorKind,
};

/// Why an operation was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is invalid; every problem is listed.
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<RequestError>),
    /// A safety rule refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No such worker.
    #[error("no worker named `{0}`")]
    NotFound(String),
    /// The TTL change is not allowed.
    #[error(transparent)]
    Ttl(#[from] TtlError),
    /// A provider or the claim store failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl From<PoolRecordError> for ServiceError {
    fn from(e: PoolRecordError) -> Self {
        match e {
            PoolRecordError::Limit { pool, source, .. } => {
                Self::Invalid(vec![RequestError::Limit { pool, source }])
            }
            PoolRecordError::Contended { .. } => Self::Provider(ProviderError::new(
                ProviderErrorKind::Conflict,
                e.to_string(),
            )),
            PoolRecordError::Store { source, .. } => Self::Provider(source),
        }
    }
}

impl ServiceError {
    /// The error's category, for exit codes, metrics, tool errors and the
    /// audit trail.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Invalid(_) | Self::Ttl(_) => ErrorCategory::Invalid,
            Self::Refused(_) => ErrorCategory::Refused,
            Self::NotFound(_) => ErrorCategory::NotFound,
            Self::Provider(_) => ErrorCategory::Failed,
        }
    }
}

/// What kind of [`ServiceError`] an operation ended with: what front-ends
/// decide on (exit codes, tool error categories), never the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// The request is invalid (bad arguments, limits, a TTL change not
    /// allowed).
    Invalid,
    /// A safety rule refused it.
    Refused,
    /// No such worker.
    NotFound,
    /// A provider or the claim store failed.
    Failed,
}

impl ErrorCategory {
    /// A stable label for metrics, logs and tool errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::NotFound => "not-found",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for new workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// Pool name.
    pub pool: String,
    /// Size name; the pool's first size when omitted.
    pub size: Option<String>,
    /// How many (1–10).
    pub count: u32,
    /// TTL (1–168 h); the pool's default when omitted.
    pub ttl: Option<Duration>,
    /// Who asks.
    pub requested_by: String,
    /// Why.
    pub reason: String,
}

/// Which workers to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerFilter {
    /// Only this worker type.
    pub worker_type: Option<WorkerType>,
    /// Only this pool.
    pub pool: Option<String>,
}

/// The service over an executor's ports.
pub struct Service<H, J, N, S> {
    exec: Arc<Executor<H, J, N, S>>,
    names: NameGen,
}

/// Generates the random suffix of worker names.
#[derive(Debug)]
struct NameGen {
    seed: RandomState,
    counter: AtomicU64,
}

impl NameGen {
    fn suffix(&self) -> String {
        let mut h = self.seed.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        let mut x = h.finish();
        let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
        (0..WORKER_SUFFIX_LEN)
            .map(|_| {
                let c = alphabet[(x % alphabet.len() as u64) as usize];
                x /= alphabet.len() as u64;
                char::from(c)
            })
            .collect()
    }
}

fn audit_log(
    actor: &str,
    op: &str,
    target: &str,
    result: &Result<impl std::fmt::Debug, ServiceError>,
) {
    match result {
        Ok(_) => info!(target: "tidepool::audit", actor, op, target, result = "ok", "audit"),
        Err(e) => info!(
            target: "tidepool::audit",
            actor,
            op,
            target,
            result = e.category().as_str(),
            error = %e,
            "audit"
        ),
    }
}

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Service<H, J, N, S> {
    /// A service over `exec`.
    pub fn new(exec: Arc<Executor<H, J, N, S>>) -> Self {
        Self {
            exec,
            names: NameGen {
                seed: RandomState::new(),
                counter: AtomicU64::new(0),
            },
        }
    }

    /// The executor.
    pub fn executor(&self) -> &Arc<Executor<H, J, N, S>> {
        &self.exec
    }

    /// Writes the audit trail of one operation: a structured log line, and
    /// an entry on each claim it concerns.
    async fn audit<T: std::fmt::Debug>(
        &self,
        actor: &str,
        op: &str,
        target: &str,
        claims: &[String],
        result: &Result<T, ServiceError>,
    ) {
        audit_log(actor, op, target, result);
        let (outcome, message) = match result {
            Ok(_) => (AuditResult::Ok, format!("{op} {target} accepted")),
            Err(e) => (AuditResult::Error(e.category()), e.to_string()),
        };
        let entry = AuditEntry {
            actor: actor.to_owned(),
            operation: op.to_owned(),
            result: outcome,
            message,
        };
        for claim in claims {
            self.exec.store().audit(claim, &entry).await;
        }
    }

    /// Refuses a name that matches a protected pattern.
    fn refuse_protected(&self, id: &str) -> Result<(), ServiceError> {
        match self.exec.config().protected.matching(id) {
            Some(pattern) => Err(ServiceError::Refused(Refusal::Protected {
                name: id.to_owned(),
                pattern: pattern.to_owned(),
            })),
            None => Ok(()),
        }
    }

    fn pool(&self, name: &str) -> Result<&Pool, RequestError> {
        let cfg = self.exec.config();
        cfg.pool(name).ok_or_else(|| RequestError::UnknownPool {
            name: name.to_owned(),
            hint: did_you_mean(name, cfg.pools.iter().map(|p| p.name.as_str())),
        })
    }

    /// Validates a request and creates its claims; returns their names.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] listing every problem (count, TTL, pool,
    /// size, limits), or a store failure.
    pub async fn provision(&self, req: &ProvisionRequest) -> Result<Vec<String>, ServiceError> {
        self.provision_on(req, None).await
    }

    /// [`Service::provision`] with the host already chosen (the planner's
    /// choice), recorded on each claim for the executor to use. The same
    /// checks apply.
    ///
    /// # Errors
    /// As [`Service::provision`].
    pub async fn provision_on(
        &self,
        req: &ProvisionRequest,
        host: Option<&str>,
    ) -> Result<Vec<String>, ServiceError> {
        let result = self.provision_inner(req, host, Intent::Keep).await;
        let claims = result.as_ref().map(Clone::clone).unwrap_or_default();
        self.audit(&req.requested_by, "provision", &req.pool, &claims, &result)
            .await;
        result
    }

    /// Requests one cold spare of `size` in `pool` on `host` for `actor`
    /// (the pool's refill): a claim with the `Spare` intent, admitted
    /// under the same checks as any worker, and audited as `provision-spare`.
    ///
    /// # Errors
    /// As [`Service::provision`].
    pub async fn provision_spare(
        &self,
        actor: &str,
        pool: &str,
        size: &str,
        host: &str,
        reason: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let req = ProvisionRequest {
            pool: pool.to_owned(),
            size: Some(size.to_owned()),
            count: 1,
            ttl: None,
            requested_by: actor.to_owned(),
            reason: reason.to_owned(),
        };
        let result = self.provision_inner(&req, Some(host), Intent::Spare).await;
        let claims = result.as_ref().map(Clone::clone).unwrap_or_default();
        self.audit(actor, "provision-spare", pool, &claims, &result)
            .await;
        result
    }

    /// Activates the cold spare `name` for `actor`: its intent becomes
    /// `Keep`, so the executor starts it and it rejoins. True when it was
    /// activated now; false when it is no unactivated spare (any more).
    ///
    /// # Errors
    /// Store failures.
    pub async fn activate_spare(&self, actor: &str, name: &str) -> Result<bool, ServiceError> {
        let store = self.exec.store();
        let Some(mut claim) = store.get(name).await? else {
            return Ok(false);
        };
        if !claim.is_unactivated_spare() || claim.deleting {
            return Ok(false);
        }
        claim.spec.intent = Intent::Keep;
        let result = store.update(&claim).await.map_err(ServiceError::from);
        self.audit(actor, "activate-spare", name, &[name.to_owned()], &result)
            .await;
        result.map(|()| true)
    }

    async fn provision_inner(
        &self,
        req: &ProvisionRequest,
        host: Option<&str>,
        intent: Intent,
    ) -> Result<Vec<String>, ServiceError> {
        let mut errors = check_bounds(req.count, req.ttl).err().unwrap_or_default();
        let cfg = self.exec.config().clone();
        let pool = match self.pool(&req.pool) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let size_name = req
            .size
            .clone()
            .or_else(|| pool.and_then(|p| p.sizes.first().cloned()));
        let size = match &size_name {
            Some(name) => match cfg.size(name) {
                Some(s) => Some(s),
                None => {
                    errors.push(RequestError::UnknownSize {
                        name: name.clone(),
                        hint: did_you_mean(name, cfg.sizes.keys().map(String::as_str)),
                    });
                    None
                }
            },
            None => None,
        };
        if let (Some(pool), Some(name)) = (pool, &size_name)
            && size.is_some()
            && !pool.sizes.contains(name)
        {
            errors.push(RequestError::SizeNotInPool {
                pool: pool.name.clone(),
                size: name.clone(),
                offered: pool.sizes.join(", "),
            });
        }
        if let Some(pool) = pool
            && pool.kind == PoolKind::Permanent
            && req.ttl.is_some()
        {
            errors.push(RequestError::TtlOnPermanent(pool.name.clone()));
        }
        let (Some(pool), Some(size_name), true) = (pool, size_name, errors.is_empty()) else {
            return Err(ServiceError::Invalid(errors));
        };
        let ttl = req.ttl.or(pool.ttl);
        let names: Vec<String> = (0..req.count)
            .map(|_| worker_name(&pool.name, &self.names.suffix()))
            .collect();
        // The limit check and the reservation of these names are one
        // atomic step on the pool's record; only then are claims created.
        admit(
            self.exec.store(),
            &cfg,
            pool,
            &size_name,
            &names,
            self.exec.now(),
        )
        .await?;
        for (i, name) in names.iter().enumerate() {
            let claim = Claim {
                name: name.clone(),
                spec: ClaimSpec {
                    pool: pool.name.clone(),
                    size: size_name.clone(),
                    ttl,
                    requested_by: req.requested_by.clone(),
                    reason: req.reason.clone(),
                    intent,
                    host: host.map(str::to_owned),
                },
                status: ClaimStatus::default(),
                finalizer: true,
                generation: None,
                deleting: false,
            };
            // The host goes in with the claim itself, so the executor never
            // sees the claim without the planner's choice.
            if let Err(e) = self.exec.store().create(&claim).await {
                release(self.exec.store(), &pool.name, &names[i..]).await;
                return Err(e.into());
            }
        }
        Ok(names)
    }

    /// Every worker: managed claims and the cluster's other nodes, with
    /// the time left to each counted from the executor's clock.
    ///
    /// # Errors
    /// Store or cluster failures.
    pub async fn list_workers(
        &self,
        filter: &WorkerFilter,
    ) -> Result<Vec<WorkerInfo>, ServiceError> {
        let claims = self.exec.store().list().await?;
        let nodes = self.exec.nodes().list().await?;
        let now = self.exec.now();
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for c in &claims {
            if c.status.lifecycle.phase() == Phase::Terminated {
                continue;
            }
            seen.insert(c.name.clone());
            out.push(self.claim_view(c, nodes.iter().find(|n| n.name == c.name), now));
        }
        let keys = &self.exec.config().labels;
        for n in nodes.iter().filter(|n| !seen.contains(&n.name)) {
            out.push(WorkerInfo {
                name: n.name.clone(),
                managed: false,
                pool: n.labels.get(&keys.pool).cloned(),
                kind: None,
                worker_type: n
                    .labels
                    .get(&keys.worker_type)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
                size: n.labels.get(&keys.size).cloned(),
                phase: WorkerPhase::Unmanaged,
                failure: None,
                node_ready: Some(n.ready),
                cordoned: n.unschedulable,
                workload_pods: n.workload_pods as u64,
                vmid: None,
                host: None,
                ip: None,
                expires_at: None,
                expires_in: None,
                requested_by: None,
                last_error: None,
                node: None,
            });
        }
        out.retain(|w| {
            filter
                .worker_type
                .is_none_or(|t| w.worker_type == t.as_str())
                && filter
                    .pool
                    .as_ref()
                    .is_none_or(|p| w.pool.as_ref() == Some(p))
        });
        out.sort_by(|a, b| {
            (a.pool.as_deref(), a.name.as_str()).cmp(&(b.pool.as_deref(), b.name.as_str()))
        });
        Ok(out)
    }

    fn claim_view(&self, c: &Claim, node: Option<&NodeView>, now: Timestamp) -> WorkerInfo {
        let kind = self.exec.config().pool(&c.spec.pool).map(|p| p.kind);
        let failure = match &c.status.lifecycle {
            tidepool_core::Lifecycle::Failed { step, reason } => Some(format!("{step}: {reason}")),
            _ => None,
        };
        WorkerInfo {
            name: c.name.clone(),
            managed: true,
            pool: Some(c.spec.pool.clone()),
            kind,
            worker_type: kind
                .map_or("unknown", |k| k.worker_type().as_str())
                .to_owned(),
            size: Some(c.spec.size.clone()),
            phase: c.status.lifecycle.phase().into(),
            failure,
            node_ready: node.map(|n| n.ready),
            cordoned: node.is_some_and(|n| n.unschedulable),
            workload_pods: node.map_or(0, |n| n.workload_pods as u64),
            vmid: c.status.vm.as_ref().map(|v| v.vmid).or(c.status.vmid),
            host: c.host(),
            ip: c.status.ip.map(|ip| ip.to_string()),
            expires_at: c.status.expires_at,
            expires_in: c.status.expires_at.map(|at| expires_in(at, now)),
            requested_by: Some(c.spec.requested_by.clone()),
            last_error: c.status.last_error.clone(),
            node: None,
        }
    }

    /// One worker by name.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] when neither a claim nor a node has that name.
    pub async fn get_worker(&self, id: &str) -> Result<WorkerInfo, ServiceError> {
        let mut worker = self
            .list_workers(&WorkerFilter::default())
            .await?
            .into_iter()
            .find(|w| w.name == id)
            .ok_or_else(|| ServiceError::NotFound(id.to_owned()))?;
        if worker.node_ready.is_some() {
            worker.node = self.exec.nodes().node_detail(id).await?;
        }
        Ok(worker)
    }

    /// The claim behind a worker, after the rules that apply to every
    /// disruptive operation: not protected, managed, not permanent.
    async fn managed_claim(
        &self,
        id: &str,
        force_drain_rule: bool,
    ) -> Result<(Claim, Option<NodeView>), ServiceError> {
        let claim = self.exec.store().get(id).await?;
        let nodes = self.exec.nodes().list().await?;
        let node = nodes.into_iter().find(|n| n.name == id);
        let Some(claim) = claim else {
            if node.is_none() {
                return Err(ServiceError::NotFound(id.to_owned()));
            }
            let target = DestroyTarget {
                name: id,
                managed: false,
                kind: None,
                cordoned: false,
                remaining_pods: 0,
            };
            check_destroy(&target, &self.exec.config().protected, true)?;
            return Err(ServiceError::NotFound(id.to_owned()));
        };
        let kind = self.exec.config().pool(&claim.spec.pool).map(|p| p.kind);
        let target = DestroyTarget {
            name: id,
            managed: true,
            kind,
            cordoned: node.as_ref().is_none_or(|n| n.unschedulable),
            remaining_pods: node.as_ref().map_or(0, |n| n.workload_pods),
        };
        check_destroy(&target, &self.exec.config().protected, force_drain_rule)?;
        Ok((claim, node))
    }

    /// `[id]` when a claim of that name exists, else nothing.
    async fn known_claim(&self, id: &str) -> Vec<String> {
        match self.exec.store().get(id).await {
            Ok(Some(_)) => vec![id.to_owned()],
            _ => Vec::new(),
        }
    }

    /// Asks for a worker to be cordoned and drained (it stays, drained,
    /// until destroyed).
    ///
    /// # Errors
    /// Refusals of spec §8, unknown workers, store failures.
    pub async fn drain(&self, actor: &str, id: &str) -> Result<(), ServiceError> {
        let result = async {
            let (mut claim, _) = self.managed_claim(id, true).await?;
            if claim.spec.intent == Intent::Keep {
                claim.spec.intent = Intent::Drain;
                self.exec.store().update(&claim).await?;
            }
            Ok(())
        }
        .await;
        self.audit(actor, "drain", id, &self.known_claim(id).await, &result)
            .await;
        result
    }

    /// Asks for a worker to be removed. Without `force` the worker must be
    /// drained (cordoned, no workload pods left).
    ///
    /// # Errors
    /// Refusals of spec §8, unknown workers, store failures.
    pub async fn destroy(&self, actor: &str, id: &str, force: bool) -> Result<(), ServiceError> {
        let result = async {
            let (mut claim, _) = self.managed_claim(id, force).await?;
            claim.spec.intent = Intent::Remove { force };
            self.exec.store().update(&claim).await?;
            Ok(())
        }
        .await;
        let op = if force { "destroy --force" } else { "destroy" };
        self.audit(actor, op, id, &self.known_claim(id).await, &result)
            .await;
        result
    }

    /// The autoscaler's scale-down: asks for a worker to go, drained first
    /// unless `drain` is false (an idle worker). Protected names and nodes
    /// Tidepool does not manage are refused as everywhere; which workers
    /// may go is the planner's decision (spec §4), so a drained state is
    /// not required. A worker already on its way out is left as it is.
    ///
    /// # Errors
    /// Protected or unknown workers, store failures.
    pub async fn retire(
        &self,
        actor: &str,
        id: &str,
        drain: bool,
        reason: &str,
    ) -> Result<bool, ServiceError> {
        let result = async {
            self.refuse_protected(id)?;
            let mut claim = self
                .exec
                .store()
                .get(id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(id.to_owned()))?;
            if claim.spec.intent != Intent::Keep {
                return Ok(false);
            }
            claim.spec.intent = Intent::Remove { force: !drain };
            self.exec.store().update(&claim).await?;
            Ok(true)
        }
        .await;
        let op = format!("scale-down ({reason})");
        self.audit(actor, &op, id, &self.known_claim(id).await, &result)
            .await;
        result
    }

    /// Extends a worker's TTL by `hours` (1–168), counted from its current
    /// expiry; the result may not leave more than 168 h to live.
    ///
    /// # Errors
    /// Workers without a TTL, out-of-range hours, unknown workers.
    pub async fn extend_ttl(
        &self,
        actor: &str,
        id: &str,
        hours: u32,
    ) -> Result<Timestamp, ServiceError> {
        let result = async {
            let by = Duration::from_secs(u64::from(hours) * 3600);
            check_bounds(1, Some(by)).map_err(ServiceError::Invalid)?;
            let (mut claim, node) = self.managed_claim(id, true).await?;
            let (Some(provisioned_at), Some(expires_at)) =
                (claim.status.provisioned_at, claim.status.expires_at)
            else {
                return Err(ServiceError::Invalid(vec![RequestError::Ttl(format!(
                    "worker `{id}` has no TTL"
                ))]));
            };
            let ttl = Ttl {
                provisioned_at,
                expires_at,
            };
            let now = self.exec.now();
            let longer = ttl.extend(by, now, safety::MAX_TTL)?;
            claim.spec.ttl = Some(
                longer
                    .expires_at
                    .duration_since(provisioned_at)
                    .unsigned_abs(),
            );
            self.exec.store().update(&claim).await?;
            let mut status = claim.status.clone();
            status.expires_at = Some(longer.expires_at);
            self.exec.store().save_status(id, &status).await?;
            claim.status = status;
            if node.is_some() {
                let meta = self
                    .exec
                    .metadata(&claim)
                    .map_err(|e| ProviderError::new(ProviderErrorKind::Permanent, e.to_string()))?;
                self.exec.nodes().ensure_metadata(id, &meta).await?;
            }
            Ok(longer.expires_at)
        }
        .await;
        self.audit(
            actor,
            "extend-ttl",
            id,
            &self.known_claim(id).await,
            &result,
        )
        .await;
        result
    }

    /// Cordons (`true`) or uncordons a worker's node. Protected names are
    /// refused; unmanaged workers may be cordoned.
    ///
    /// # Errors
    /// Refusals, unknown nodes, cluster failures.
    pub async fn set_cordon(
        &self,
        actor: &str,
        id: &str,
        cordon: bool,
    ) -> Result<(), ServiceError> {
        let result = async {
            self.refuse_protected(id)?;
            let exists = self.exec.nodes().list().await?.iter().any(|n| n.name == id);
            if !exists {
                return Err(ServiceError::NotFound(id.to_owned()));
            }
            if cordon {
                self.exec.nodes().cordon(id).await?;
            } else {
                self.exec.nodes().uncordon(id).await?;
            }
            Ok(())
        }
        .await;
        let op = if cordon { "cordon" } else { "uncordon" };
        self.audit(actor, op, id, &self.known_claim(id).await, &result)
            .await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_name_suffixes_are_dns_safe_and_distinct() {
        let g = NameGen {
            seed: RandomState::new(),
            counter: AtomicU64::new(0),
        };
        let a: Vec<String> = (0..200).map(|_| g.suffix()).collect();
        let unique: BTreeSet<&String> = a.iter().collect();
        assert_eq!(unique.len(), a.len());
        assert!(a.iter().all(|s| {
            s.len() == WORKER_SUFFIX_LEN
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        }));
    }
}
