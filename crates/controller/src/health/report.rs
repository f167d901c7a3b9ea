//! What the service layer tells about workers' health, for the front-ends
//! (`tidepool health`, the MCP `get_worker_health` and
//! `get_worker_details` tools): each managed worker's record with the next
//! action as the monitor would plan it now, and the state of a worker's
//! OS services read from the machine. Read-only.

use tidepool_core::view::{HealthSubject, ServiceState, WorkerHealth, worker_health};

use crate::ports::{ClaimStore, GuestOs, Hypervisor, Joiner, Nodes};
use crate::service::{Service, ServiceError};

impl<H, J, N, S> Service<H, J, N, S>
where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
{
    /// The health of every managed worker, or of `worker` alone, with the
    /// next action of the repair matrix as the monitor plans it now (the
    /// pool's and the cluster's brakes applied).
    ///
    /// # Errors
    /// `NotFound` for a `worker` that has no claim; the claim store's and
    /// the nodes' errors.
    pub async fn worker_health(
        &self,
        worker: Option<&str>,
    ) -> Result<Vec<WorkerHealth>, ServiceError> {
        let exec = self.executor();
        let claims = exec.store().list().await?;
        let nodes = exec.nodes().list().await?;
        let cluster = (
            nodes.iter().filter(|n| !n.problems.is_empty()).count(),
            nodes.len(),
        );
        let subjects: Vec<HealthSubject<'_>> = claims
            .iter()
            .map(|c| HealthSubject {
                name: &c.name,
                pool: &c.spec.pool,
                phase: c.phase(),
                record: &c.status.health,
            })
            .collect();
        let mut all = worker_health(exec.config(), &subjects, cluster, exec.now());
        if let Some(name) = worker {
            all.retain(|w| w.worker == name);
            if all.is_empty() {
                return Err(ServiceError::NotFound(name.to_owned()));
            }
        }
        Ok(all)
    }
}

impl<H, J, N, S> Service<H, J, N, S>
where
    H: Hypervisor,
    J: Joiner + GuestOs,
    N: Nodes,
    S: ClaimStore,
{
    /// The services of the worker's OS (kubelet, containerd, ...) as the
    /// machine reports them now; `None` for a worker Tidepool does not
    /// manage, one with no address yet, or one whose machine does not
    /// answer (being rebooted, down).
    ///
    /// # Errors
    /// The claim store's.
    pub async fn worker_services(
        &self,
        id: &str,
    ) -> Result<Option<Vec<ServiceState>>, ServiceError> {
        let exec = self.executor();
        let Some(ip) = exec.store().get(id).await?.and_then(|c| c.status.ip) else {
            return Ok(None);
        };
        match exec.joiner().services(ip).await {
            Ok(services) => Ok(Some(
                services
                    .into_iter()
                    .map(|s| ServiceState {
                        id: s.id,
                        state: s.state,
                        healthy: s.healthy,
                        failures: s.failures,
                    })
                    .collect(),
            )),
            Err(e) => {
                tracing::debug!(worker = id, error = %e, "services not read");
                Ok(None)
            }
        }
    }
}
