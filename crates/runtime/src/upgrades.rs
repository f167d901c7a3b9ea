//! The metric of rolling upgrades: `tidepool_upgrade_workers{pool,state}`,
//! each pool's workers by where its rollout has them (pending, upgrading,
//! done, failed), as the leader's rollout loop last counted them.

#[cfg(test)]
use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidepool_controller::rollout::WorkerCounts;

/// A pool and a rollout state (the configured pools, four states).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct UpgradeLabels {
    pool: String,
    state: String,
}

/// The gauges of the rolling upgrades.
#[derive(Debug, Default)]
pub(crate) struct UpgradeGauges {
    workers: Family<UpgradeLabels, Gauge<i64, AtomicI64>>,
}

/// The metric's name.
pub(crate) const NAME: &str = "tidepool_upgrade_workers";

impl UpgradeGauges {
    /// Registers the family; returns its name and type for the declared list.
    pub(crate) fn register(&self, r: &mut Registry) -> (String, &'static str) {
        r.register(
            NAME,
            "Workers of each pool's rolling upgrade, by state (pending, upgrading, done, failed)",
            self.workers.clone(),
        );
        (NAME.to_owned(), "gauge")
    }

    /// Sets `pool`'s four gauges.
    pub(crate) fn set(&self, pool: &str, counts: &WorkerCounts) {
        for (state, n) in counts.pairs() {
            self.workers
                .get_or_create(&UpgradeLabels {
                    pool: pool.to_owned(),
                    state: state.to_owned(),
                })
                .set(n);
        }
    }
}

/// The gauges as a map, for tests.
#[cfg(test)]
fn values(g: &UpgradeGauges) -> BTreeMap<String, i64> {
    let mut r = Registry::default();
    g.register(&mut r);
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &r);
    text.lines()
        .filter(|l| l.starts_with(NAME))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_workers_are_counted_by_state() {
        let g = UpgradeGauges::default();
        g.set(
            "burst",
            &WorkerCounts {
                pending: 3,
                upgrading: 1,
                done: 1,
                failed: 0,
            },
        );
        let v = values(&g);
        assert_eq!(
            v.get(r#"tidepool_upgrade_workers{pool="burst",state="pending"}"#),
            Some(&3)
        );
        assert_eq!(
            v.get(r#"tidepool_upgrade_workers{pool="burst",state="failed"}"#),
            Some(&0)
        );
    }
}
