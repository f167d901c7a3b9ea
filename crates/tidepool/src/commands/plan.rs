//! `tidepool plan`: what the autoscaler would do now (a dry run), with the
//! reason for every action and for every pod it cannot help.

use serde_json::json;
use tidepool_controller::live::snapshot::plan_input;
use tidepool_core::planner::{Action, plan};

use crate::commands::workers::Context;
use crate::exit::Exit;
use crate::live;
use crate::output::{self, Format};

/// Observes the cluster and the hypervisor, plans, and prints the plan.
///
/// # Errors
/// Output failures; connection problems are exit codes.
pub fn run(ctx: &Context) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (exec, _) = match live::service(&ctx.config, ctx.kubeconfig.as_ref(), ctx.time_scale, ctx.time_origin).await {
            Ok(s) => s,
            Err(u) => {
                eprintln!("{}", u.message);
                return Ok(u.exit);
            }
        };
        let input = match plan_input(&exec).await {
            Ok(i) => i,
            Err(e) => {
                eprintln!("error: observing the cluster: {e}");
                return Ok(Exit::Failure);
            }
        };
        let plan = plan(&input);
        let actions: Vec<serde_json::Value> = plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Provision {
                    pool,
                    size,
                    host,
                    count,
                    reason,
                } => json!({"action": "provision", "pool": pool, "size": size, "host": host, "count": count,
                    "reason": reason.code.as_str(), "message": reason.message}),
                Action::Remove {
                    worker,
                    pool,
                    drain,
                    reason,
                } => json!({"action": if *drain { "drain-and-remove" } else { "remove" }, "pool": pool, "worker": worker,
                    "reason": reason.code.as_str(), "message": reason.message}),
            })
            .collect();
        let doc = json!({
            "pendingPods": input.pending.len(),
            "actions": actions,
            "unhelpable": plan.unhelpable.iter().map(|u| json!({"pod": u.pod, "reason": u.reason.code.as_str(), "message": u.reason.message})).collect::<Vec<_>>(),
            "waiting": plan.waiting.iter().map(|w| json!({"pod": w.pod, "pool": w.pool, "reason": w.reason.code.as_str(), "message": w.reason.message})).collect::<Vec<_>>(),
            "held": plan.held.iter().map(|h| json!({"worker": h.worker, "wanted": h.wanted.as_str(), "reason": h.reason.code.as_str(), "message": h.reason.message})).collect::<Vec<_>>(),
        });
        if let Some(text) = output::structured(ctx.output, &doc)? {
            print!("{text}");
            return Ok(Exit::Ok);
        }
        debug_assert_eq!(ctx.output, Format::Table);
        println!("{} pending pod(s); {} worker(s) to add.", input.pending.len(), plan.nodes_requested());
        if !plan.actions.is_empty() {
            let mut t = output::table(["ACTION", "POOL", "SIZE/WORKER", "HOST", "COUNT", "REASON"]);
            for a in &doc["actions"].as_array().cloned().unwrap_or_default() {
                t.add_row(vec![
                    a["action"].as_str().unwrap_or("").to_owned(),
                    a["pool"].as_str().unwrap_or("").to_owned(),
                    a["size"].as_str().or(a["worker"].as_str()).unwrap_or("").to_owned(),
                    a["host"].as_str().unwrap_or("-").to_owned(),
                    a["count"].as_u64().map_or_else(|| "-".into(), |c| c.to_string()),
                    a["message"].as_str().unwrap_or("").to_owned(),
                ]);
            }
            print!("\n{}", output::render(&t));
        }
        for (title, key, who) in [("Cannot help", "unhelpable", "pod"), ("Waiting", "waiting", "pod"), ("Held", "held", "worker")] {
            let rows = doc[key].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                continue;
            }
            let mut t = output::table([who.to_uppercase(), "REASON".to_owned(), "WHY".to_owned()]);
            for r in rows {
                t.add_row(vec![
                    r[who].as_str().unwrap_or("").to_owned(),
                    r["reason"].as_str().unwrap_or("").to_owned(),
                    r["message"].as_str().unwrap_or("").to_owned(),
                ]);
            }
            print!("\n{title}:\n{}", output::render(&t));
        }
        Ok(Exit::Ok)
    })
}
