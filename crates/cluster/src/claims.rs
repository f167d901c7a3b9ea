//! Reading and writing `WorkerClaim` objects: create with the finalizer,
//! get, list, status patches, finalizer handling, deletion, and installing
//! the CRD itself.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

use tidepool_core::claim::{Claim, ClaimStatus};

use crate::claim::{FINALIZER, WorkerClaim};
use crate::client::{ClusterClient, Deletion};
use crate::error::{ClusterError, ErrorCategory};

/// The field manager name Tidepool uses for server-side apply.
pub const FIELD_MANAGER: &str = "tidepool";

/// How many times a finalizer change retries after losing a race.
const CONFLICT_ATTEMPTS: u32 = 5;

impl ClusterClient {
    /// The typed API of worker claims.
    pub fn claims(&self) -> Api<WorkerClaim> {
        Api::all(self.client.clone())
    }

    /// A watch-fed cache of every claim, started on the first call (inside
    /// a Tokio runtime). Reads from it may lag this process's own writes by
    /// the time the watch event takes to arrive.
    pub fn claim_cache(&self) -> &crate::cache::Cache<WorkerClaim> {
        self.claim_cache.get_or_init(|| {
            crate::cache::Cache::start(self.claims(), kube::runtime::watcher::Config::default())
        })
    }

    /// Installs or updates the `WorkerClaim` CRD by server-side apply.
    ///
    /// # Errors
    /// API failures (Forbidden without cluster-admin-like rights).
    pub async fn install_crd(&self) -> Result<CustomResourceDefinition, ClusterError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = WorkerClaim::crd();
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| ClusterError::api(format!("applying CustomResourceDefinition {name}"), e))
    }

    /// Creates the resource of `claim`, carrying the cleanup finalizer, with
    /// an empty status.
    ///
    /// # Errors
    /// AlreadyExists when a claim of that name exists; Invalid for a bad name.
    pub async fn create_claim(&self, claim: &Claim) -> Result<WorkerClaim, ClusterError> {
        let name = &claim.name;
        self.claims()
            .create(&PostParams::default(), &WorkerClaim::for_claim(claim))
            .await
            .map_err(|e| ClusterError::api(format!("creating WorkerClaim {name}"), e))
    }

    /// Reads a claim; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// API failures other than NotFound.
    pub async fn get_claim(&self, name: &str) -> Result<Option<WorkerClaim>, ClusterError> {
        self.claims()
            .get_opt(name)
            .await
            .map_err(|e| ClusterError::api(format!("reading WorkerClaim {name}"), e))
    }

    /// Lists every claim, optionally filtered by a label selector.
    ///
    /// # Errors
    /// API failures.
    pub async fn list_claims(
        &self,
        label_selector: Option<&str>,
    ) -> Result<Vec<WorkerClaim>, ClusterError> {
        let mut params = ListParams::default();
        if let Some(selector) = label_selector {
            params = params.labels(selector);
        }
        self.claims()
            .list(&params)
            .await
            .map(|l| l.items)
            .map_err(|e| ClusterError::api("listing WorkerClaims", e))
    }

    /// Writes a claim's whole status with one JSON merge patch on the
    /// status subresource. Fields that are unset are cleared, so the stored
    /// status equals `status` afterwards.
    ///
    /// # Errors
    /// NotFound when the claim does not exist; Invalid when the server
    /// rejects a value.
    pub async fn patch_claim_status(
        &self,
        name: &str,
        status: &ClaimStatus,
    ) -> Result<WorkerClaim, ClusterError> {
        self.patch_claim_status_at(name, status, None).await
    }

    /// As [`ClusterClient::patch_claim_status`], but only if the claim is
    /// still at `resource_version` (when given): a claim written by anyone
    /// since is left alone and the answer is a conflict.
    ///
    /// # Errors
    /// Conflict when the claim changed since `resource_version`; NotFound
    /// when it does not exist; Invalid when the server rejects a value.
    pub async fn patch_claim_status_at(
        &self,
        name: &str,
        status: &ClaimStatus,
        resource_version: Option<&str>,
    ) -> Result<WorkerClaim, ClusterError> {
        let mut patch = json!({ "status": status_patch(status)? });
        if let Some(rv) = resource_version {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        self.claims()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ClusterError::api(format!("patching the status of WorkerClaim {name}"), e))
    }

    /// Adds the cleanup finalizer if missing (idempotent).
    ///
    /// # Errors
    /// NotFound; Conflict after repeated races.
    pub async fn add_claim_finalizer(&self, name: &str) -> Result<WorkerClaim, ClusterError> {
        self.change_finalizers(name, "adding the finalizer to", |f| {
            if f.iter().any(|x| x == FINALIZER) {
                false
            } else {
                f.push(FINALIZER.to_owned());
                true
            }
        })
        .await
        .and_then(|c| {
            c.ok_or_else(|| ClusterError::Vanished {
                operation: format!("adding the finalizer to WorkerClaim {name}"),
            })
        })
    }

    /// Removes the cleanup finalizer (idempotent). Call it only once the
    /// claim's node and VM are proven gone. Returns `None` when the claim
    /// no longer exists afterwards (it was being deleted and this was its
    /// last finalizer, or it was already gone).
    ///
    /// # Errors
    /// API failures other than NotFound; Conflict after repeated races.
    pub async fn remove_claim_finalizer(
        &self,
        name: &str,
    ) -> Result<Option<WorkerClaim>, ClusterError> {
        let result = self
            .change_finalizers(name, "removing the finalizer from", |f| {
                let before = f.len();
                f.retain(|x| x != FINALIZER);
                f.len() != before
            })
            .await;
        match result {
            Err(e) if e.is_not_found() => Ok(None),
            Ok(Some(claim)) if claim.metadata.deletion_timestamp.is_some() => {
                // The server may answer with the last state of an object it
                // then removes; report what is actually there now.
                if claim.finalizers().is_empty() {
                    self.get_claim(name).await
                } else {
                    Ok(Some(claim))
                }
            }
            other => other,
        }
    }

    /// Read-modify-write of the finalizer list, guarded by resourceVersion.
    /// `Ok(None)` only when the claim vanished between read and write.
    async fn change_finalizers(
        &self,
        name: &str,
        what: &str,
        change: impl Fn(&mut Vec<String>) -> bool,
    ) -> Result<Option<WorkerClaim>, ClusterError> {
        let api = self.claims();
        for _ in 0..CONFLICT_ATTEMPTS {
            let claim = api
                .get(name)
                .await
                .map_err(|e| ClusterError::api(format!("reading WorkerClaim {name}"), e))?;
            let mut finalizers = claim.finalizers().to_vec();
            if !change(&mut finalizers) {
                return Ok(Some(claim));
            }
            let patch = json!({"metadata": {
                "resourceVersion": claim.metadata.resource_version,
                "finalizers": finalizers,
            }});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => return Ok(Some(updated)),
                Err(e) => {
                    let err = ClusterError::api(format!("{what} WorkerClaim {name}"), e);
                    match err.category() {
                        ErrorCategory::Conflict => continue,
                        ErrorCategory::NotFound => return Ok(None),
                        _ => return Err(err),
                    }
                }
            }
        }
        Err(ClusterError::ConflictRetriesExhausted {
            operation: format!("{what} WorkerClaim {name}"),
            attempts: CONFLICT_ATTEMPTS,
        })
    }

    /// Requests deletion of a claim. With the finalizer present the claim
    /// stays (with a deletionTimestamp) until the finalizer is removed.
    ///
    /// # Errors
    /// API failures other than NotFound.
    pub async fn delete_claim(&self, name: &str) -> Result<Deletion, ClusterError> {
        match self.claims().delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(Deletion::Deleted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Deletion::AlreadyGone),
            Err(e) => Err(ClusterError::api(format!("deleting WorkerClaim {name}"), e)),
        }
    }
}

/// The JSON names of every status field, read from the status's schema so
/// the list cannot miss a field.
fn status_fields() -> &'static [String] {
    static FIELDS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        schemars::schema_for!(ClaimStatus)
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    });
    &FIELDS
}

/// The status as a merge-patch body: every known field present, unset
/// ones as `null` so the patch clears them.
///
/// # Errors
/// [`ClusterError::Encode`] if the status cannot be serialised.
pub fn status_patch(status: &ClaimStatus) -> Result<Value, ClusterError> {
    let mut value = serde_json::to_value(status).map_err(|source| ClusterError::Encode {
        what: "WorkerClaim status",
        source,
    })?;
    if let Value::Object(map) = &mut value {
        for field in status_fields() {
            map.entry(field.clone()).or_insert(Value::Null);
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_patch_clears_the_fields_that_are_unset() {
        let patch = status_patch(&ClaimStatus::default()).unwrap();
        assert_eq!(patch["phase"], "Requested");
        assert_eq!(patch["lastError"], Value::Null);
        assert_eq!(patch["failedStep"], Value::Null);
        assert_eq!(patch["vm"], Value::Null);
        assert!(patch.as_object().unwrap().contains_key("lastError"));
        assert_eq!(patch.as_object().unwrap().len(), status_fields().len());
        assert!(status_fields().len() >= 13, "{:?}", status_fields());
    }
}
