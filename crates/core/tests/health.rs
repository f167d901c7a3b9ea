//! Tables for the repair matrix (spec §7): every row with its threshold,
//! the order of escalation, the brakes (20 % unhealthy, one repair at a
//! time, the pool's concurrency cap, backoff, recovery), permanent pools
//! never replaced, control-plane nodes never touched; and the windows of
//! the health record across observations.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use tidepool_core::health::matrix::{Why, next};
use tidepool_core::health::{
    Action, HealthRecord, Observed, Outcome, Problem, RepairPolicy, WorkerInput, plan,
};
use tidepool_core::pool::PoolKind;

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn at(min: i64) -> Timestamp {
    t0() + SignedDuration::from_mins(min)
}

/// A record whose problems started at the given minutes.
fn sick(problems: &[(Problem, i64)]) -> HealthRecord {
    HealthRecord {
        problems: problems.iter().map(|(p, m)| (*p, at(*m))).collect(),
        ..HealthRecord::default()
    }
}

/// `r` after `action` for `problem` ran from minute `start` and ended at
/// `end` with `outcome`.
fn repaired(
    mut r: HealthRecord,
    problem: Problem,
    action: Action,
    start: i64,
    end: i64,
    outcome: Outcome,
) -> HealthRecord {
    r.start(action, problem, at(start));
    r.finish(outcome, None, at(end));
    r
}

mod matrix_table {
    use super::*;

    struct Case {
        name: &'static str,
        record: HealthRecord,
        kind: PoolKind,
        policy: RepairPolicy,
        now: i64,
        /// The next action, when it is due (minutes), and why.
        expect: Option<(Action, i64, Why)>,
    }

    fn replacing() -> RepairPolicy {
        RepairPolicy {
            replace: true,
            ..RepairPolicy::default()
        }
    }

    fn cases() -> Vec<Case> {
        let d = RepairPolicy::default;
        use Action::*;
        use PoolKind::*;
        use Problem::*;
        vec![
            Case {
                name: "a healthy worker has nothing to do",
                record: HealthRecord::default(),
                kind: Burst,
                policy: d(),
                now: 0,
                expect: None,
            },
            Case {
                name: "not ready under 5 min is watched until the kubelet restart is due",
                record: sick(&[(NotReady, 0)]),
                kind: Burst,
                policy: d(),
                now: 3,
                expect: Some((RestartKubelet, 5, Why::Matrix)),
            },
            Case {
                name: "not ready for 5 min restarts kubelet",
                record: sick(&[(NotReady, 0)]),
                kind: Burst,
                policy: d(),
                now: 6,
                expect: Some((RestartKubelet, 5, Why::Matrix)),
            },
            Case {
                name: "after the kubelet restart the reboot is due at 10 min",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    RestartKubelet,
                    5,
                    5,
                    Outcome::Done,
                ),
                kind: Burst,
                policy: d(),
                now: 6,
                expect: Some((Reboot, 10, Why::Matrix)),
            },
            Case {
                name: "a repair gets its recovery time before the next level",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    RestartKubelet,
                    8,
                    8,
                    Outcome::Done,
                ),
                kind: Burst,
                policy: d(),
                now: 10,
                expect: Some((Reboot, 13, Why::Matrix)),
            },
            Case {
                name: "not ready for 20 min after a reboot: a burst pool that allows it replaces",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    Reboot,
                    10,
                    11,
                    Outcome::Done,
                ),
                kind: Burst,
                policy: replacing(),
                now: 21,
                expect: Some((Replace, 20, Why::Matrix)),
            },
            Case {
                name: "not ready for 20 min: a burst pool that does not allow replacing escalates",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    Reboot,
                    10,
                    11,
                    Outcome::Done,
                ),
                kind: Burst,
                policy: d(),
                now: 21,
                expect: Some((Escalate, 20, Why::NotAllowed)),
            },
            Case {
                name: "a permanent worker is never replaced, even when the policy says replace",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    Reboot,
                    10,
                    11,
                    Outcome::Done,
                ),
                kind: Permanent,
                policy: replacing(),
                now: 21,
                expect: Some((Escalate, 20, Why::NotAllowed)),
            },
            Case {
                name: "an escalated worker is not escalated again",
                record: HealthRecord {
                    escalated_at: Some(at(20)),
                    ..repaired(
                        sick(&[(NotReady, 0)]),
                        NotReady,
                        Reboot,
                        10,
                        11,
                        Outcome::Done,
                    )
                },
                kind: Permanent,
                policy: d(),
                now: 30,
                expect: None,
            },
            Case {
                name: "a worker found not ready for 12 min with nothing done reboots (the highest level passed)",
                record: sick(&[(NotReady, 0)]),
                kind: Burst,
                policy: d(),
                now: 12,
                expect: Some((Reboot, 10, Why::Matrix)),
            },
            Case {
                name: "disk pressure frees disk at once",
                record: sick(&[(DiskPressure, 0)]),
                kind: Burst,
                policy: d(),
                now: 0,
                expect: Some((FreeDisk, 0, Why::Matrix)),
            },
            Case {
                name: "disk pressure that outlasts the freeing and the recovery is escalated",
                record: repaired(
                    sick(&[(DiskPressure, 0)]),
                    DiskPressure,
                    FreeDisk,
                    0,
                    2,
                    Outcome::Done,
                ),
                kind: Burst,
                policy: d(),
                now: 8,
                expect: Some((Escalate, 7, Why::Matrix)),
            },
            Case {
                name: "memory pressure under 10 min is watched",
                record: sick(&[(MemoryPressure, 0)]),
                kind: Permanent,
                policy: d(),
                now: 4,
                expect: Some((DrainReboot, 10, Why::Matrix)),
            },
            Case {
                name: "memory pressure for 10 min drains and reboots",
                record: sick(&[(MemoryPressure, 0)]),
                kind: Permanent,
                policy: d(),
                now: 10,
                expect: Some((DrainReboot, 10, Why::Matrix)),
            },
            Case {
                name: "a kubelet crash loop reboots",
                record: sick(&[(KubeletCrashLoop, 2)]),
                kind: Spot,
                policy: d(),
                now: 2,
                expect: Some((Reboot, 2, Why::Matrix)),
            },
            Case {
                name: "a containerd crash loop escalates by default",
                record: sick(&[(ContainerdCrashLoop, 2)]),
                kind: Gpu,
                policy: d(),
                now: 2,
                expect: Some((Escalate, 2, Why::NotAllowed)),
            },
            Case {
                name: "a containerd crash loop replaces a gpu worker when the pool allows it",
                record: sick(&[(ContainerdCrashLoop, 2)]),
                kind: Gpu,
                policy: replacing(),
                now: 2,
                expect: Some((Replace, 2, Why::Matrix)),
            },
            Case {
                name: "PID pressure has no repair in spec 7: escalated after 10 min",
                record: sick(&[(PidPressure, 0)]),
                kind: Burst,
                policy: d(),
                now: 1,
                expect: Some((Escalate, 10, Why::Matrix)),
            },
            Case {
                name: "a failed reboot is tried again after the backoff",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    Reboot,
                    10,
                    11,
                    Outcome::Failed,
                ),
                kind: Burst,
                policy: d(),
                now: 12,
                expect: Some((Reboot, 13, Why::Retry)),
            },
            Case {
                name: "an interrupted repair (a failover) is taken as done, not repeated",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    RestartKubelet,
                    5,
                    6,
                    Outcome::Interrupted,
                ),
                kind: Burst,
                policy: d(),
                now: 7,
                expect: Some((Reboot, 11, Why::Matrix)),
            },
            Case {
                name: "a dry run climbs the ladder as if it had acted",
                record: repaired(
                    sick(&[(NotReady, 0)]),
                    NotReady,
                    RestartKubelet,
                    5,
                    5,
                    Outcome::DryRun,
                ),
                kind: Burst,
                policy: RepairPolicy {
                    dry_run: true,
                    ..d()
                },
                now: 7,
                expect: Some((Reboot, 10, Why::Matrix)),
            },
            Case {
                name: "a pool with repairs disabled escalates what the matrix asks",
                record: sick(&[(NotReady, 0)]),
                kind: Burst,
                policy: RepairPolicy {
                    enabled: false,
                    ..d()
                },
                now: 5,
                expect: Some((Escalate, 5, Why::Disabled)),
            },
            Case {
                name: "of two problems the one due first goes first",
                record: sick(&[(NotReady, 0), (DiskPressure, 3)]),
                kind: Burst,
                policy: d(),
                now: 3,
                expect: Some((FreeDisk, 3, Why::Matrix)),
            },
        ]
    }

    #[test]
    fn every_row_of_spec_7() {
        for c in cases() {
            let got = next(&c.record, &c.policy, c.kind, false, at(c.now))
                .map(|n| (n.action, n.at, n.why));
            let want = c.expect.map(|(a, m, w)| (a, at(m), w));
            assert_eq!(got, want, "{}", c.name);
        }
    }
}

#[test]
fn a_repair_still_running_blocks_the_next_one() {
    let mut r = sick(&[(Problem::NotReady, 0)]);
    r.start(Action::RestartKubelet, Problem::NotReady, at(5));
    assert_eq!(
        next(&r, &RepairPolicy::default(), PoolKind::Burst, false, at(30)),
        None
    );
    assert!(r.interrupt(at(31)));
    assert_eq!(
        r.last_repair.as_ref().unwrap().outcome,
        Some(Outcome::Interrupted)
    );
}

#[test]
fn control_plane_nodes_are_never_given_an_action() {
    let r = sick(&[(Problem::NotReady, 0)]);
    assert_eq!(
        next(
            &r,
            &RepairPolicy::default(),
            PoolKind::Permanent,
            true,
            at(30)
        ),
        None
    );
}

#[test]
fn retries_double_the_backoff_and_stop_after_the_attempts() {
    let p = RepairPolicy::default();
    let mut r = sick(&[(Problem::KubeletCrashLoop, 0)]);
    r = repaired(
        r,
        Problem::KubeletCrashLoop,
        Action::Reboot,
        0,
        1,
        Outcome::Failed,
    );
    r = repaired(
        r,
        Problem::KubeletCrashLoop,
        Action::Reboot,
        3,
        4,
        Outcome::Failed,
    );
    assert_eq!(r.last_repair.as_ref().unwrap().attempt, 2);
    let n = next(&r, &p, PoolKind::Burst, false, at(5)).unwrap();
    assert_eq!((n.action, n.at, n.why), (Action::Reboot, at(8), Why::Retry));
    r = repaired(
        r,
        Problem::KubeletCrashLoop,
        Action::Reboot,
        8,
        9,
        Outcome::Failed,
    );
    let n = next(&r, &p, PoolKind::Burst, false, at(10)).unwrap();
    assert_eq!((n.action, n.at), (Action::Escalate, at(14)));
}

mod windows {
    use super::*;

    fn observed(conditions: &[(Problem, i64)], kubelet: Option<u32>) -> Observed {
        Observed {
            conditions: conditions.iter().map(|(p, m)| (*p, at(*m))).collect(),
            kubelet_failures: kubelet,
            containerd_failures: Some(0),
        }
    }

    #[test]
    fn a_window_keeps_its_start_across_observations_and_closes_when_the_problem_ends() {
        let p = RepairPolicy::default();
        let mut r = HealthRecord::default();
        let t = r.observe(&observed(&[(Problem::NotReady, 1)], Some(0)), &p, at(2));
        assert_eq!(t.opened, vec![Problem::NotReady]);
        assert_eq!(r.problems[&Problem::NotReady], at(1));
        // The node's condition moved (a flap inside the window): the recorded start stays.
        let t = r.observe(&observed(&[(Problem::NotReady, 4)], Some(0)), &p, at(5));
        assert!(t.opened.is_empty());
        assert_eq!(r.problems[&Problem::NotReady], at(1));
        r.escalated_at = Some(at(5));
        let t = r.observe(&observed(&[], Some(0)), &p, at(6));
        assert_eq!(t.closed, vec![Problem::NotReady]);
        assert!(!r.unhealthy());
        // The escalation stands while the problem may still come back...
        assert_eq!(r.escalated_at, Some(at(5)));
        // ...and is forgotten once it stayed away for the recovery time.
        let t = r.observe(&observed(&[], Some(0)), &p, at(12));
        assert!(t.closed.is_empty() && t.opened.is_empty());
        assert_eq!(r.escalated_at, None);
        assert!(r.recently_cleared.is_empty());
    }

    /// One flap table row: the problem's observations (minute, present),
    /// and what the window looks like after the last one.
    struct Flap {
        name: &'static str,
        seen: &'static [(i64, bool)],
        /// The window's start after the last observation (None: closed).
        since: Option<i64>,
        /// Whether the last observation resumed an old window.
        resumed: bool,
    }

    #[test]
    fn a_problem_back_within_the_recovery_time_keeps_its_window() {
        // The default recovery time is 5 minutes.
        let rows = [
            Flap {
                name: "back one minute after clearing: the old window goes on",
                seen: &[(0, true), (6, false), (7, true)],
                since: Some(0),
                resumed: true,
            },
            Flap {
                name: "back exactly at the recovery time: still the old window",
                seen: &[(0, true), (6, false), (11, true)],
                since: Some(0),
                resumed: true,
            },
            Flap {
                name: "back after the recovery time: a new window",
                seen: &[(0, true), (6, false), (12, true)],
                since: Some(12),
                resumed: false,
            },
            Flap {
                name: "flapping again and again never restarts the window",
                seen: &[
                    (0, true),
                    (4, false),
                    (5, true),
                    (9, false),
                    (10, true),
                    (14, false),
                    (15, true),
                ],
                since: Some(0),
                resumed: true,
            },
            Flap {
                name: "cleared and seen healthy past the recovery time: forgotten",
                seen: &[(0, true), (6, false), (12, false), (13, true)],
                since: Some(13),
                resumed: false,
            },
            Flap {
                name: "cleared: no window",
                seen: &[(0, true), (6, false)],
                since: None,
                resumed: false,
            },
        ];
        let p = RepairPolicy::default();
        for row in rows {
            let mut r = HealthRecord::default();
            let mut last = None;
            for &(m, present) in row.seen {
                let conditions: &[(Problem, i64)] = if present {
                    &[(Problem::NotReady, m)]
                } else {
                    &[]
                };
                last = Some(r.observe(&observed(conditions, Some(0)), &p, at(m)));
            }
            let t = last.unwrap();
            assert_eq!(
                r.problems.get(&Problem::NotReady).copied(),
                row.since.map(at),
                "{}",
                row.name
            );
            assert_eq!(
                t.resumed == [Problem::NotReady],
                row.resumed,
                "{}",
                row.name
            );
            assert!(
                !(row.resumed && t.opened.contains(&Problem::NotReady)),
                "{}: a resumed window is not a new one",
                row.name
            );
        }
    }

    #[test]
    fn a_node_flapping_ready_between_repairs_climbs_the_ladder_to_replace() {
        // NotReady from minute 0; each repair cures it for a minute only.
        let p = RepairPolicy {
            replace: true,
            ..RepairPolicy::default()
        };
        let mut r = HealthRecord::default();
        let sick = |m| observed(&[(Problem::NotReady, m)], Some(0));
        let well = observed(&[], Some(0));
        r.observe(&sick(0), &p, at(0));
        let mut taken = Vec::new();
        for m in 0..40 {
            let now = at(m);
            // Healthy for the minute after each repair, sick again after.
            let just_repaired = r
                .last_repair
                .as_ref()
                .and_then(|l| l.finished_at)
                .is_some_and(|f| now.duration_since(f) < SignedDuration::from_mins(2));
            let seen = if just_repaired { well.clone() } else { sick(m) };
            r.observe(&seen, &p, now);
            if let Some(n) = next(&r, &p, PoolKind::Burst, false, now).filter(|n| n.due(now)) {
                taken.push((n.action, m));
                if n.action == Action::Replace {
                    // The worker goes.
                    break;
                }
                r.start(n.action, n.problem, now);
                r.finish(Outcome::Done, None, now);
            }
        }
        let actions: Vec<Action> = taken.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            actions,
            [Action::RestartKubelet, Action::Reboot, Action::Replace],
            "{taken:?}"
        );
        assert_eq!(
            r.problems[&Problem::NotReady],
            at(0),
            "one window all along"
        );
    }

    #[test]
    fn a_crash_loop_starts_at_the_policys_restart_count_and_survives_an_unanswered_service_list() {
        let p = RepairPolicy::default();
        let mut r = HealthRecord::default();
        r.observe(&observed(&[], Some(2)), &p, at(1));
        assert!(!r.unhealthy());
        r.observe(&observed(&[], Some(3)), &p, at(2));
        assert_eq!(r.problems[&Problem::KubeletCrashLoop], at(2));
        r.observe(&observed(&[], None), &p, at(3));
        assert_eq!(r.problems[&Problem::KubeletCrashLoop], at(2));
        r.observe(&observed(&[], Some(0)), &p, at(4));
        assert!(!r.unhealthy());
    }

    #[test]
    fn a_node_transition_in_the_future_starts_the_window_now() {
        let p = RepairPolicy::default();
        let mut r = HealthRecord::default();
        r.observe(&observed(&[(Problem::DiskPressure, 9)], Some(0)), &p, at(3));
        assert_eq!(r.problems[&Problem::DiskPressure], at(3));
    }

    #[test]
    fn the_record_round_trips_through_json_and_is_left_out_when_empty() {
        let mut r = sick(&[(Problem::NotReady, 0)]);
        r.start(Action::Reboot, Problem::NotReady, at(10));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["lastRepair"]["action"], "Reboot");
        assert_eq!(json["problems"][0]["problem"], "NotReady");
        assert_eq!(json["problems"][0]["since"], at(0).to_string());
        assert_eq!(json["lastRepair"]["finishedAt"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<HealthRecord>(json).unwrap(), r);
        let status = tidepool_core::ClaimStatus::default();
        assert!(
            serde_json::to_value(&status)
                .unwrap()
                .get("health")
                .is_none()
        );
    }
}

mod brakes {
    use super::*;

    struct Pool {
        records: Vec<HealthRecord>,
        policy: RepairPolicy,
    }

    fn decide(pool: &Pool, cluster: (usize, usize), now: i64) -> BTreeMap<String, (Action, Why)> {
        let names: Vec<String> = (0..pool.records.len())
            .map(|i| format!("burst-{i}"))
            .collect();
        let inputs: Vec<WorkerInput<'_>> = pool
            .records
            .iter()
            .zip(&names)
            .map(|(record, name)| WorkerInput {
                name,
                pool: "burst",
                kind: PoolKind::Burst,
                control_plane: false,
                record,
                policy: &pool.policy,
            })
            .collect();
        plan(&inputs, cluster, at(now))
            .into_iter()
            .map(|d| (d.worker, (d.next.action, d.next.why)))
            .collect()
    }

    fn pool(sick_workers: usize, healthy: usize) -> Pool {
        let mut records: Vec<HealthRecord> = (0..sick_workers)
            .map(|i| sick(&[(Problem::NotReady, i64::try_from(i).unwrap())]))
            .collect();
        records.extend((0..healthy).map(|_| HealthRecord::default()));
        Pool {
            records,
            policy: RepairPolicy::default(),
        }
    }

    #[test]
    fn more_than_a_fifth_of_the_pool_unhealthy_escalates_instead_of_repairing() {
        // 2 of 5: more than ceil(5 * 0.2) = 1.
        let d = decide(&pool(2, 3), (2, 8), 10);
        assert_eq!(d["burst-0"], (Action::Escalate, Why::Braked));
        assert_eq!(d["burst-1"], (Action::Escalate, Why::Braked));
    }

    #[test]
    fn more_than_a_fifth_of_the_cluster_unhealthy_escalates_too() {
        let d = decide(&pool(1, 9), (4, 10), 10);
        assert_eq!(d["burst-0"], (Action::Escalate, Why::Braked));
    }

    #[test]
    fn a_pool_of_one_may_repair_its_worker() {
        let d = decide(&pool(1, 0), (1, 6), 10);
        assert_eq!(d["burst-0"], (Action::Reboot, Why::Matrix));
    }

    #[test]
    fn the_pool_repairs_one_worker_at_a_time_the_longest_sick_first() {
        let mut p = pool(2, 8);
        p.policy.max_unhealthy_fraction = 0.5;
        let d = decide(&p, (2, 20), 10);
        assert_eq!(d["burst-0"], (Action::Reboot, Why::Matrix));
        assert_eq!(d["burst-1"], (Action::RestartKubelet, Why::WaitingForSlot));
        p.policy.max_concurrent = 2;
        let d = decide(&p, (2, 20), 10);
        assert_eq!(d["burst-1"], (Action::RestartKubelet, Why::Matrix));
    }

    #[test]
    fn a_running_repair_takes_the_pools_slot() {
        let mut p = pool(2, 8);
        p.policy.max_unhealthy_fraction = 0.5;
        p.records[0].start(Action::Reboot, Problem::NotReady, at(10));
        let d = decide(&p, (2, 20), 11);
        assert!(!d.contains_key("burst-0"));
        assert_eq!(d["burst-1"], (Action::Reboot, Why::WaitingForSlot));
    }

    #[test]
    fn waiting_repairs_take_no_slot_before_they_are_due() {
        let mut p = pool(2, 8);
        p.policy.max_unhealthy_fraction = 0.5;
        let d = decide(&p, (2, 20), 5);
        assert_eq!(d["burst-0"], (Action::RestartKubelet, Why::Matrix));
        assert_eq!(d["burst-1"], (Action::RestartKubelet, Why::Matrix));
    }
}
