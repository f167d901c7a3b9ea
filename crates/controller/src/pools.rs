//! Each pool's durable record through the [`PoolRecords`] port: the
//! read-modify-write loop with its optimistic precondition, and admission,
//! which makes a pool's limit check and the reservation of the new claims'
//! names one atomic step.
//!
//! # Admission
//! Read the record (version `v`), list the claims, count the pool's usage:
//! its live claims plus the names the record admitted whose claims do not
//! exist yet (creations in flight; they expire after
//! [`ADMISSION_BOUND`](tidepool_core::pool_record::ADMISSION_BOUND)).
//! Refuse what would exceed the limits; otherwise write the record with the
//! new names, on condition that it is still at `v`, and start again when
//! another writer got there first. Only then are the claims created. Two
//! requests — from two processes, two replicas, the CLI beside the
//! controller — can therefore never both count the same room.

use std::collections::BTreeSet;
use std::future::Future;

use tidepool_core::config::{Config, Pool};
use tidepool_core::jiff::Timestamp;
use tidepool_core::planner::usage::pool_usage;
use tidepool_core::pool::LimitError;
use tidepool_core::pool_record::{Admission, PoolRecord};

use crate::claim::Claim;
use crate::ports::{
    ClaimStore, PoolRecords, ProviderError, ProviderErrorKind, ProviderResult, VersionedRecord,
};

/// How many times a write of a pool's record starts again after losing a
/// race before giving up: each round has one winner, so this many
/// concurrent writers all get through.
pub const ATTEMPTS: u32 = 32;

/// Why a pool's record was not changed.
#[derive(Debug, thiserror::Error)]
pub enum PoolRecordError {
    /// Admitting the workers would exceed one of the pool's limits.
    #[error("admitting {count} worker(s) to pool `{pool}`: {source}")]
    Limit {
        /// Pool name.
        pool: String,
        /// How many workers were asked for.
        count: u32,
        /// The limit.
        #[source]
        source: LimitError,
    },
    /// Other writers won every round.
    #[error(
        "writing the record of pool `{pool}`: it changed under every one of {attempts} attempts"
    )]
    Contended {
        /// Pool name.
        pool: String,
        /// Rounds tried.
        attempts: u32,
    },
    /// Reading or writing the record, or listing the claims, failed.
    #[error("the record of pool `{pool}`: {source}")]
    Store {
        /// Pool name.
        pool: String,
        /// The store's error.
        #[source]
        source: ProviderError,
    },
}

impl PoolRecordError {
    /// A stable category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Limit { .. } => "limit",
            Self::Contended { .. } => "contended",
            Self::Store { source, .. } => source.kind.as_str(),
        }
    }
}

/// Changes a pool's record with an optimistic precondition: reads it,
/// fetches what `edit` also needs (read after the record, so it is at
/// least as new), lets `edit` change it, and writes it only if it is still
/// at the version read, starting again after a lost race. `edit` answers
/// its result and whether it changed the record; nothing is written when
/// it did not.
///
/// # Errors
/// What `edit` returns; [`PoolRecordError::Contended`] after [`ATTEMPTS`]
/// lost races; [`PoolRecordError::Store`] when the store fails.
pub async fn modify<P, C, F, Fut, T>(
    store: &P,
    pool: &str,
    fetch: F,
    mut edit: impl FnMut(&mut PoolRecord, C) -> Result<(T, bool), PoolRecordError>,
) -> Result<T, PoolRecordError>
where
    P: PoolRecords + ?Sized,
    F: Fn() -> Fut,
    Fut: Future<Output = ProviderResult<C>>,
{
    let failed = |source| PoolRecordError::Store {
        pool: pool.to_owned(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let VersionedRecord {
            mut record,
            version,
        } = store.read_pool(pool).await.map_err(failed)?;
        let context = fetch().await.map_err(failed)?;
        let (out, changed) = edit(&mut record, context)?;
        if !changed {
            return Ok(out);
        }
        match store.write_pool(pool, &record, version.as_deref()).await {
            Ok(()) => return Ok(out),
            Err(e) if e.kind == ProviderErrorKind::Conflict => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Err(PoolRecordError::Contended {
        pool: pool.to_owned(),
        attempts: ATTEMPTS,
    })
}

/// Admits `names`, new workers of size `size`, to `pool` at `now` (see the
/// module doc); once this returns, their claims may be created.
///
/// # Errors
/// [`PoolRecordError::Limit`] naming the limit the pool would exceed,
/// counting live claims and admissions in flight; as [`modify`] otherwise.
pub async fn admit<S: ClaimStore + ?Sized>(
    store: &S,
    cfg: &Config,
    pool: &Pool,
    size: &str,
    names: &[String],
    now: Timestamp,
) -> Result<(), PoolRecordError> {
    let count = u32::try_from(names.len()).unwrap_or(u32::MAX);
    let Some(shape) = cfg.size(size) else {
        return Err(PoolRecordError::Store {
            pool: pool.name.clone(),
            source: ProviderError::new(
                ProviderErrorKind::Permanent,
                format!("admitting workers of the unknown size `{size}`"),
            ),
        });
    };
    modify(
        store,
        &pool.name,
        || store.list(),
        |record, claims: Vec<Claim>| {
            let existing: BTreeSet<&str> = claims.iter().map(|c| c.name.as_str()).collect();
            record.prune_admitted(&existing, now);
            let states: Vec<_> = claims.iter().map(Claim::planner_state).collect();
            let usage = record.in_flight(cfg, pool_usage(cfg, &states, &pool.name));
            pool.limits
                .check_add(usage, &shape.size, count)
                .map_err(|source| PoolRecordError::Limit {
                    pool: pool.name.clone(),
                    count,
                    source,
                })?;
            for name in names {
                let admission = Admission {
                    size: size.to_owned(),
                    at: now,
                };
                record.admitted.insert(name.clone(), admission);
            }
            Ok(((), true))
        },
    )
    .await
}

/// Gives back the room of admitted `names` whose claims will not be created
/// (their creation failed). Best effort: on failure the admissions simply
/// expire. Safe even when a creation reported as failed did happen: a claim
/// that exists counts itself.
pub async fn release<S: ClaimStore + ?Sized>(store: &S, pool: &str, names: &[String]) {
    let released = modify(
        store,
        pool,
        || std::future::ready(Ok(())),
        |record, ()| {
            let before = record.admitted.len();
            record.admitted.retain(|name, _| !names.contains(name));
            Ok(((), record.admitted.len() != before))
        },
    )
    .await;
    if let Err(e) = released {
        tracing::warn!(%pool, error = %e, "admissions not given back; they expire on their own");
    }
}
