//! `tidepool plan`: what the autoscaler would do now (a dry run), with the
//! reason for every action and for every pod it cannot help. The JSON and
//! YAML forms are the MCP tool `plan_scaling`'s result.

use tidepool_core::planner::plan;
use tidepool_core::view::{PlanResult, PodReason};

use crate::context::Context;
use crate::exit::Exit;
use crate::live;
use crate::output::{self, Format};

/// Observes the cluster and the hypervisor, plans, and prints the plan.
///
/// # Errors
/// Output failures; connection problems are exit codes.
pub fn run(ctx: &Context) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let input = match live::observe(&live.exec).await {
            Ok(input) => input,
            Err(unavailable) => return Ok(unavailable.report()),
        };
        let doc = PlanResult::new(&input, &plan(&input));
        if let Some(text) = output::structured(ctx.output, &doc)? {
            print!("{text}");
            return Ok(Exit::Ok);
        }
        debug_assert_eq!(ctx.output, Format::Table);
        print!("{}", table(&doc));
        Ok(Exit::Ok)
    })
}

/// The plan for people: a summary line, the actions, then the pods and
/// workers it leaves alone, each with why.
pub(crate) fn table(doc: &PlanResult) -> String {
    let mut out = format!(
        "{} pending pod(s); {} worker(s) to add.\n",
        doc.pending_pods, doc.nodes_requested
    );
    if !doc.actions.is_empty() {
        let mut t = output::table(["ACTION", "POOL", "SIZE/WORKER", "HOST", "COUNT", "REASON"]);
        for a in &doc.actions {
            t.add_row(vec![
                a.action.clone(),
                a.pool.clone(),
                a.size
                    .clone()
                    .or_else(|| a.worker.clone())
                    .unwrap_or_default(),
                a.host.clone().unwrap_or_else(|| "-".into()),
                a.count.map_or_else(|| "-".into(), |c| c.to_string()),
                a.message.clone(),
            ]);
        }
        out.push_str(&format!("\n{}", output::render(&t)));
    }
    let pods = |title: &str, rows: &[PodReason]| {
        if rows.is_empty() {
            return String::new();
        }
        let mut t = output::table(["POD", "REASON", "WHY"]);
        for r in rows {
            t.add_row(vec![r.pod.clone(), r.reason.clone(), r.message.clone()]);
        }
        format!("\n{title}:\n{}", output::render(&t))
    };
    out.push_str(&pods("Cannot help", &doc.unhelpable));
    out.push_str(&pods("Waiting", &doc.waiting));
    if !doc.held.is_empty() {
        let mut t = output::table(["WORKER", "REASON", "WHY"]);
        for h in &doc.held {
            t.add_row(vec![h.worker.clone(), h.reason.clone(), h.message.clone()]);
        }
        out.push_str(&format!("\nHeld:\n{}", output::render(&t)));
    }
    if !doc.deferred.is_empty() {
        let mut t = output::table(["POOL", "WANTED", "REASON", "WHY"]);
        for d in &doc.deferred {
            t.add_row(vec![
                d.pool.clone(),
                d.wanted.clone(),
                d.reason.clone(),
                d.message.clone(),
            ]);
        }
        out.push_str(&format!("\nDeferred:\n{}", output::render(&t)));
    }
    out
}
