//! `tidepool scale-up`: an emergency request (spec §4). Plans now, as the
//! autoscaler would, with the trigger windows of the chosen pools skipped
//! — never their limits or the hosts' room — and requests the workers the
//! plan asks for in those pools, through the same service layer and audit
//! trail as `tidepool provision`.

use serde::Serialize;
use tidepool_controller::autoscaler::emergency;
use tidepool_core::view::PlanResult;

use crate::commands::plan::table;
use crate::commands::workers::actor;
use crate::context::Context;
use crate::exit::Exit;
use crate::output::{self, Format};

/// What the request did: the workers requested, and the plan behind them.
#[derive(Serialize)]
struct ScaleUpResult {
    /// Claims created.
    created: Vec<String>,
    /// The plan, restricted to the chosen pools' scale-up.
    plan: PlanResult,
}

/// Runs the emergency request for `pools` (every pool when empty).
///
/// # Errors
/// Output failures; connection problems and unknown pools are exit codes.
pub fn run(ctx: &Context, pools: &[String]) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let config = live.exec.config();
        let unknown: Vec<&String> = pools.iter().filter(|p| config.pool(p).is_none()).collect();
        if !unknown.is_empty() {
            for p in unknown {
                eprintln!("error: no pool named `{p}` in the configuration");
            }
            return Ok(Exit::Invalid);
        }
        let pools: Vec<String> = if pools.is_empty() {
            config.pools.iter().map(|p| p.name.clone()).collect()
        } else {
            pools.to_vec()
        };
        let (input, plan, created) = match emergency(
            &live.service,
            &tidepool_live::LiveObserver(live.exec.clone()),
            &pools,
            &actor(),
        )
        .await
        {
            Ok(done) => done,
            Err(e) => {
                eprintln!("error: observing the cluster: {e}");
                return Ok(Exit::Failure);
            }
        };
        let doc = ScaleUpResult {
            created,
            plan: PlanResult::new(&input, &plan),
        };
        // Pods were waiting and none of them could be helped: a refusal
        // scripts can tell from success.
        let exit = if doc.created.is_empty() && !plan.unhelpable.is_empty() {
            Exit::Refused
        } else {
            Exit::Ok
        };
        if let Some(text) = output::structured(ctx.output, &doc)? {
            print!("{text}");
            return Ok(exit);
        }
        debug_assert_eq!(ctx.output, Format::Table);
        if doc.created.is_empty() {
            println!("No workers requested.");
        } else {
            println!(
                "Requested {} worker(s): {}",
                doc.created.len(),
                doc.created.join(", ")
            );
        }
        print!("{}", table(&doc.plan));
        Ok(exit)
    })
}
