//! `tidepool health [WORKER]`: each worker's health as the monitor keeps it
//! on its claim (spec §7): its current problems and since when, the latest
//! repair with its try and outcome, and the next action of the repair
//! matrix with when it falls due (the brakes of the pool and the cluster
//! applied, as the controller would).

use serde::Serialize;
use tidepool_controller::claim::Claim;
use tidepool_controller::ports::{ClaimStore, Nodes};
use tidepool_core::config::Config;
use tidepool_core::duration::Human;
use tidepool_core::health::{self, Repair, WorkerInput};
use tidepool_core::jiff::Timestamp;

use crate::context::Context;
use crate::exit::Exit;
use crate::output::{self, Format};

/// One current problem, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProblemRow {
    problem: String,
    since: Timestamp,
    /// How long it has lasted, in words (`7m`).
    lasted: String,
}

/// The next action, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NextRow {
    action: String,
    problem: String,
    at: Timestamp,
    /// Why this action (`matrix`, `retry`, `too-many-unhealthy`, ...).
    why: String,
}

/// One worker's health, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthRow {
    worker: String,
    pool: String,
    phase: String,
    problems: Vec<ProblemRow>,
    last_repair: Option<Repair>,
    repairs: u32,
    escalated_at: Option<Timestamp>,
    next: Option<NextRow>,
}

/// The rows of `claims` at `now`; `cluster` is the (unhealthy, total)
/// node count the brakes look at.
fn rows(
    config: &Config,
    claims: &[Claim],
    cluster: (usize, usize),
    now: Timestamp,
) -> Vec<HealthRow> {
    let inputs: Vec<WorkerInput<'_>> = claims
        .iter()
        .filter_map(|c| {
            let pool = config.pool(&c.spec.pool)?;
            Some(WorkerInput {
                name: &c.name,
                pool: &pool.name,
                kind: pool.kind,
                control_plane: false,
                record: &c.status.health,
                policy: &pool.repair,
            })
        })
        .collect();
    let decisions = health::plan(&inputs, cluster, now);
    claims
        .iter()
        .map(|c| {
            let h = &c.status.health;
            let next = decisions
                .iter()
                .find(|d| d.worker == c.name)
                .map(|d| NextRow {
                    action: d.next.action.to_string(),
                    problem: d.next.problem.to_string(),
                    at: d.next.at,
                    why: d.next.why.as_str().to_owned(),
                });
            HealthRow {
                worker: c.name.clone(),
                pool: c.spec.pool.clone(),
                phase: c.phase().to_string(),
                problems: h
                    .problems
                    .iter()
                    .map(|(p, since)| ProblemRow {
                        problem: p.to_string(),
                        since: *since,
                        lasted: Human(now.duration_since(*since).unsigned_abs()).to_string(),
                    })
                    .collect(),
                last_repair: h.last_repair.clone(),
                repairs: h.repairs,
                escalated_at: h.escalated_at,
                next,
            }
        })
        .collect()
}

/// The table cell of a worker's latest repair.
fn repair_cell(r: Option<&Repair>) -> String {
    match r {
        None => "-".to_owned(),
        Some(r) => {
            let outcome = r
                .outcome
                .map_or("running".to_owned(), |o| format!("{o:?}").to_lowercase());
            format!(
                "{} #{} ({outcome}) at {}",
                r.action, r.attempt, r.started_at
            )
        }
    }
}

/// Prints every worker's health, or `worker`'s.
///
/// # Errors
/// Output failures; API failures are exit code 1, an unknown worker too.
pub fn run(ctx: &Context, worker: Option<&str>) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let claims = match ClaimStore::list(live.exec.store()).await {
            Ok(claims) => claims,
            Err(e) => {
                eprintln!("error: listing the WorkerClaims: {e}");
                return Ok(Exit::Failure);
            }
        };
        let nodes = match Nodes::list(live.exec.nodes()).await {
            Ok(nodes) => nodes,
            Err(e) => {
                eprintln!("error: listing the nodes: {e}");
                return Ok(Exit::Failure);
            }
        };
        let cluster = (
            nodes.iter().filter(|n| !n.problems.is_empty()).count(),
            nodes.len(),
        );
        let mut rows = rows(live.exec.config(), &claims, cluster, live.exec.now());
        if let Some(w) = worker {
            rows.retain(|r| r.worker == w);
            if rows.is_empty() {
                eprintln!("error: no worker named `{w}`");
                return Ok(Exit::Failure);
            }
        }
        if let Some(text) = output::structured(ctx.output, &rows)? {
            print!("{text}");
            return Ok(Exit::Ok);
        }
        debug_assert_eq!(ctx.output, Format::Table);
        let mut t = output::table(["WORKER", "POOL", "PROBLEMS", "LAST REPAIR", "NEXT", "AT"]);
        for r in &rows {
            let problems = if r.problems.is_empty() {
                "healthy".to_owned()
            } else {
                r.problems
                    .iter()
                    .map(|p| format!("{} for {} (since {})", p.problem, p.lasted, p.since))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (next, at) = match &r.next {
                Some(n) => (format!("{} ({})", n.action, n.why), n.at.to_string()),
                None => ("-".to_owned(), "-".to_owned()),
            };
            t.add_row(vec![
                r.worker.clone(),
                r.pool.clone(),
                problems,
                repair_cell(r.last_repair.as_ref()),
                next,
                at,
            ]);
        }
        print!("{}", output::render(&t));
        Ok(Exit::Ok)
    })
}
