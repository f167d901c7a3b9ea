//! `tidepool health [WORKER]`: each worker's health as the monitor keeps it
//! on its claim (spec §7): its current problems and since when, the latest
//! repair with its try and outcome, and the next action of the repair
//! matrix with when it falls due (the brakes of the pool and the cluster
//! applied, as the controller would).

use tidepool_controller::service::ServiceError;
use tidepool_core::health::Repair;

use crate::context::Context;
use crate::exit::Exit;
use crate::output::{self, Format};

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
        let rows = match live.service.worker_health(worker).await {
            Ok(rows) => rows,
            Err(ServiceError::NotFound(w)) => {
                eprintln!("error: no worker named `{w}`");
                return Ok(Exit::Failure);
            }
            Err(e) => {
                eprintln!("error: reading the workers' health: {e}");
                return Ok(Exit::Failure);
            }
        };
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
