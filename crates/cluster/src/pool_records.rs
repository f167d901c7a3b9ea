//! Each pool's durable record
//! ([`PoolRecord`](tidepool_core::pool_record::PoolRecord)) as a ConfigMap
//! `tidepool-pool-<pool>` in Tidepool's namespace, the record's JSON under
//! the key `record`. A ConfigMap because every cluster has the kind, its
//! writes carry a resourceVersion precondition like any object's, and
//! `kubectl get configmap tidepool-pool-burst -o yaml` shows an operator
//! what Tidepool is waiting on.
//!
//! A first write creates the object (AlreadyExists when another writer
//! created it first); later writes replace it with the resourceVersion
//! read in `metadata.resourceVersion`, which the API server refuses with
//! 409 Conflict when the object changed since.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use tidepool_core::pool_record::PoolRecord;

use crate::client::ClusterClient;
use crate::error::ClusterError;

/// The data key holding the record's JSON.
pub const RECORD_KEY: &str = "record";

/// The label naming the pool a record belongs to.
pub const POOL_LABEL: &str = "tidepool.dev/pool";

/// The name of `pool`'s record.
pub fn record_name(pool: &str) -> String {
    format!("tidepool-pool-{pool}")
}

impl ClusterClient {
    fn records(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Reads `pool`'s record from the API server (never a cache), with its
    /// resourceVersion; `None` when there is none yet.
    ///
    /// # Errors
    /// API failures; Internal when the stored record does not parse.
    pub async fn get_pool_record(
        &self,
        namespace: &str,
        pool: &str,
    ) -> Result<Option<(PoolRecord, String)>, ClusterError> {
        let name = record_name(pool);
        let Some(cm) =
            self.records(namespace).get_opt(&name).await.map_err(|e| {
                ClusterError::api(format!("reading ConfigMap {namespace}/{name}"), e)
            })?
        else {
            return Ok(None);
        };
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(RECORD_KEY))
            .map_or("{}", String::as_str);
        let record = serde_json::from_str(text).map_err(|source| ClusterError::Decode {
            what: format!("the pool record in ConfigMap {namespace}/{name}"),
            source,
        })?;
        Ok(Some((
            record,
            cm.metadata.resource_version.unwrap_or_default(),
        )))
    }

    /// Writes `pool`'s record: creates it when `version` is `None`,
    /// otherwise replaces it on condition that it is still at `version`.
    ///
    /// # Errors
    /// AlreadyExists or Conflict when another writer got there first;
    /// NotFound when the record was deleted since it was read; other API
    /// failures.
    pub async fn put_pool_record(
        &self,
        namespace: &str,
        pool: &str,
        record: &PoolRecord,
        version: Option<&str>,
    ) -> Result<(), ClusterError> {
        let name = record_name(pool);
        let json = serde_json::to_string(record).map_err(|source| ClusterError::Encode {
            what: "a pool record",
            source,
        })?;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                resource_version: version.map(str::to_owned),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/name".to_owned(), "tidepool".to_owned()),
                    (POOL_LABEL.to_owned(), pool.to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(RECORD_KEY.to_owned(), json)])),
            ..ConfigMap::default()
        };
        let api = self.records(namespace);
        let params = PostParams::default();
        let written = match version {
            None => api.create(&params, &cm).await,
            Some(_) => api.replace(&name, &params, &cm).await,
        };
        written
            .map(drop)
            .map_err(|e| ClusterError::api(format!("writing ConfigMap {namespace}/{name}"), e))
    }
}
