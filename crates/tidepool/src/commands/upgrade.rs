//! `tidepool upgrade`: rolling Talos upgrades of a pool, in place, a batch
//! at a time. `upgrade --pool P --talos-image IMAGE` starts one (or with
//! `--dry-run` prints its batches); `upgrade status` shows each pool's
//! latest one with a progress bar; `upgrade resume|abort --pool P` moves
//! a paused one on or stops it. The running controller carries the
//! batches out; this command only reads and writes the pool's record.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use tidepool_controller::rollout::ops::{UpgradePlan, UpgradeStatus};
use tidepool_controller::rollout::{RolloutError, Rollouts};
use tidepool_core::rollout::{MaxUnavailable, Rollout, RolloutState};

use crate::context::Context;
use crate::exit::Exit;
use crate::output::{self, Format};

/// `tidepool upgrade …`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UpgradeArgs {
    /// Show, resume or abort instead of starting.
    #[command(subcommand)]
    pub action: Option<UpgradeCommand>,
    /// The pool to upgrade.
    #[arg(long)]
    pub pool: Option<String>,
    /// The Talos installer image to upgrade to (its tag is the version,
    /// e.g. `ghcr.io/siderolabs/installer:v1.11.0`).
    #[arg(long)]
    pub talos_image: Option<String>,
    /// How many workers may be unavailable at once: a count (2) or a
    /// percentage of the pool (20%, the default; at least one).
    #[arg(long, value_parser = parse_max_unavailable)]
    pub max_unavailable: Option<MaxUnavailable>,
    /// Print the batches, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `tidepool upgrade status|resume|abort`.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Each pool's latest rolling upgrade, with its progress.
    Status {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Follow until no rollout runs, redrawing the progress bars.
        #[arg(long)]
        watch: bool,
    },
    /// Resume a paused rollout (the failed batch's workers are tried again).
    Resume {
        /// The pool.
        #[arg(long)]
        pool: String,
    },
    /// Abort a rollout: no further batch starts.
    Abort {
        /// The pool.
        #[arg(long)]
        pool: String,
    },
}

fn parse_max_unavailable(s: &str) -> Result<MaxUnavailable, String> {
    MaxUnavailable::parse(s).map_err(|e| e.to_string())
}

/// A plan, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanRow {
    pool: String,
    image: String,
    version: String,
    max_unavailable: String,
    workers: Vec<WorkerVersion>,
    batches: Vec<Vec<String>>,
    dry_run: bool,
}

/// A worker with the version it reports.
#[derive(Debug, Serialize)]
struct WorkerVersion {
    worker: String,
    version: Option<String>,
}

impl PlanRow {
    fn new(plan: UpgradePlan, dry_run: bool) -> Self {
        Self {
            max_unavailable: plan.max_unavailable.to_string(),
            workers: plan
                .workers
                .into_iter()
                .map(|(worker, version)| WorkerVersion { worker, version })
                .collect(),
            pool: plan.pool,
            image: plan.image,
            version: plan.version,
            batches: plan.batches,
            dry_run,
        }
    }
}

/// A pool's rollout, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusRow {
    pool: String,
    rollout: Rollout,
    pending: i64,
    upgrading: i64,
    done: i64,
    failed: i64,
}

impl From<UpgradeStatus> for StatusRow {
    fn from(s: UpgradeStatus) -> Self {
        Self {
            pool: s.pool,
            pending: s.counts.pending,
            upgrading: s.counts.upgrading,
            done: s.counts.done,
            failed: s.counts.failed,
            rollout: s.rollout,
        }
    }
}

/// The exit code and message of a failed operation.
fn failed(e: &RolloutError) -> Exit {
    eprintln!("error: {e}");
    match e {
        RolloutError::UnknownPool(_) => Exit::NotFound,
        RolloutError::Refused(_) | RolloutError::Rule(_) => Exit::Invalid,
        RolloutError::Observe { .. } | RolloutError::Record { .. } => Exit::Failure,
    }
}

/// Runs `tidepool upgrade …`.
///
/// # Errors
/// Output failures; operation failures are exit codes.
pub fn run(ctx: &Context, args: &UpgradeArgs) -> anyhow::Result<Exit> {
    match &args.action {
        Some(UpgradeCommand::Status { pool, watch }) => status(ctx, pool.as_deref(), *watch),
        Some(UpgradeCommand::Resume { pool }) => resume_or_abort(ctx, pool, true),
        Some(UpgradeCommand::Abort { pool }) => resume_or_abort(ctx, pool, false),
        None => start(ctx, args),
    }
}

/// Starts a rollout, or prints its plan.
fn start(ctx: &Context, args: &UpgradeArgs) -> anyhow::Result<Exit> {
    let (Some(pool), Some(image)) = (args.pool.clone(), args.talos_image.clone()) else {
        eprintln!(
            "error: upgrade needs --pool and --talos-image (or a subcommand: status, resume, abort)"
        );
        return Ok(Exit::Invalid);
    };
    let max = args.max_unavailable.unwrap_or_default();
    let dry_run = args.dry_run;
    ctx.connected(|live| async move {
        let rollouts = Rollouts::new(live.exec.clone(), Arc::new(()));
        let plan = if dry_run {
            rollouts.plan(&pool, &image, max).await
        } else {
            let actor = super::workers::actor();
            rollouts.start(&pool, &image, max, &actor).await
        };
        let plan = match plan {
            Ok(p) => PlanRow::new(p, dry_run),
            Err(e) => return Ok(failed(&e)),
        };
        if let Some(text) = output::structured(ctx.output, &plan)? {
            print!("{text}");
            return Ok(Exit::Ok);
        }
        let verb = if dry_run {
            "would upgrade"
        } else {
            "upgrading"
        };
        println!(
            "{verb} pool {} to {} ({}), at most {} unavailable: {} batch(es)",
            plan.pool,
            plan.version,
            plan.image,
            plan.max_unavailable,
            plan.batches.len()
        );
        for (i, b) in plan.batches.iter().enumerate() {
            println!("  batch {}: {}", i + 1, b.join(", "));
        }
        let on_target = plan
            .workers
            .iter()
            .filter(|w| w.version.as_deref() == Some(plan.version.as_str()))
            .count();
        println!("  {on_target} worker(s) on {} already", plan.version);
        Ok(Exit::Ok)
    })
}

/// Resumes (`resume`) or aborts a rollout.
fn resume_or_abort(ctx: &Context, pool: &str, resume: bool) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let rollouts = Rollouts::new(live.exec.clone(), Arc::new(()));
        let result = if resume {
            rollouts.resume(pool).await
        } else {
            rollouts.abort(pool).await
        };
        match result {
            Ok(r) => {
                let what = if resume { "resumed" } else { "aborted" };
                println!("rolling upgrade of pool {pool} to {} {what}", r.version);
                Ok(Exit::Ok)
            }
            Err(e) => Ok(failed(&e)),
        }
    })
}

/// The state of a rollout in words.
fn state_text(r: &Rollout) -> String {
    match &r.state {
        RolloutState::Running => format!("running, batch {}", r.batches.len().max(1)),
        RolloutState::Paused { reason } => format!("paused: {reason}"),
        RolloutState::Done => "done".to_owned(),
        RolloutState::Aborted => "aborted".to_owned(),
    }
}

/// Prints each pool's latest rollout; with `watch`, follows them with
/// progress bars until none runs.
fn status(ctx: &Context, pool: Option<&str>, watch: bool) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let rollouts = Rollouts::new(live.exec.clone(), Arc::new(()));
        let bars = indicatif::MultiProgress::new();
        let mut shown: std::collections::BTreeMap<String, indicatif::ProgressBar> =
            std::collections::BTreeMap::new();
        loop {
            let found = match pool {
                Some(p) => rollouts.status(p).await.map(|s| s.into_iter().collect()),
                None => rollouts.statuses().await,
            };
            let rows: Vec<StatusRow> = match found {
                Ok(s) => s.into_iter().map(StatusRow::from).collect(),
                Err(e) => return Ok(failed(&e)),
            };
            let running = rows
                .iter()
                .any(|r| r.rollout.state == RolloutState::Running);
            if !watch {
                return print_status(ctx.output, &rows);
            }
            for r in &rows {
                let total = u64::try_from(r.pending + r.upgrading + r.done + r.failed).unwrap_or(0);
                let bar = shown.entry(r.pool.clone()).or_insert_with(|| {
                    let b = bars.add(indicatif::ProgressBar::new(total));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix:>12} [{bar:30}] {pos}/{len} {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    b.set_prefix(r.pool.clone());
                    b
                });
                bar.set_length(total);
                bar.set_position(u64::try_from(r.done).unwrap_or(0));
                bar.set_message(format!(
                    "{} → {}",
                    state_text(&r.rollout),
                    r.rollout.version
                ));
            }
            if !running {
                for b in shown.values() {
                    b.finish();
                }
                return print_status(ctx.output, &rows);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Prints the rollouts as a table or structured.
fn print_status(format: Format, rows: &[StatusRow]) -> anyhow::Result<Exit> {
    if let Some(text) = output::structured(format, &rows)? {
        print!("{text}");
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        println!("no rolling upgrade");
        return Ok(Exit::Ok);
    }
    let mut t = output::table([
        "POOL",
        "VERSION",
        "STATE",
        "DONE",
        "UPGRADING",
        "PENDING",
        "FAILED",
        "BATCHES",
    ]);
    for r in rows {
        t.add_row(vec![
            r.pool.clone(),
            r.rollout.version.clone(),
            state_text(&r.rollout),
            r.done.to_string(),
            r.upgrading.to_string(),
            r.pending.to_string(),
            r.failed.to_string(),
            r.rollout.batches.len().to_string(),
        ]);
    }
    print!("{}", output::render(&t));
    Ok(Exit::Ok)
}
