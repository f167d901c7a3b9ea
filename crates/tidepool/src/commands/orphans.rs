//! `tidepool orphans`: the VMs in the provider's VMID range that carry
//! Tidepool's ownership marker but whose claim no longer exists — what the
//! controller reports and, once its grace period is over, removes (spec
//! §6). VMs without the marker are not Tidepool's and never listed.

use serde::Serialize;
use tidepool_controller::ports::{ClaimStore, Hypervisor};
use tidepool_controller::sweep::{Orphan, orphans};

use crate::context::Context;
use crate::exit::Exit;
use crate::output::{self, Format};

/// One orphan VM, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OrphanRow {
    vmid: u32,
    node: String,
    uuid: String,
    /// The claim its marker names.
    claim: String,
    running: bool,
    locked: bool,
}

impl From<Orphan> for OrphanRow {
    fn from(o: Orphan) -> Self {
        Self {
            vmid: o.vm.vmid,
            node: o.vm.node,
            uuid: o.vm.uuid,
            claim: o.claim,
            running: o.running,
            locked: o.locked,
        }
    }
}

/// Lists the VMs, then the claims (a claim always exists before its VM,
/// so a VM of a claim being made is never listed), and prints the orphans.
///
/// # Errors
/// Output failures; API failures are exit code 1.
pub fn run(ctx: &Context) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let vms = match live.exec.hypervisor().vms_in_range().await {
            Ok(vms) => vms,
            Err(e) => {
                eprintln!("error: listing the VMs in the provider's range: {e}");
                return Ok(Exit::Failure);
            }
        };
        let claims = match live.exec.store().list().await {
            Ok(claims) => claims,
            Err(e) => {
                eprintln!("error: listing the WorkerClaims: {e}");
                return Ok(Exit::Failure);
            }
        };
        let rows: Vec<OrphanRow> = orphans(&vms, &claims)
            .into_iter()
            .map(OrphanRow::from)
            .collect();
        if let Some(text) = output::structured(ctx.output, &rows)? {
            print!("{text}");
            return Ok(Exit::Ok);
        }
        debug_assert_eq!(ctx.output, Format::Table);
        if rows.is_empty() {
            println!("No orphan VMs.");
            return Ok(Exit::Ok);
        }
        let mut t = output::table(["VMID", "NODE", "CLAIM", "RUNNING", "LOCKED", "UUID"]);
        for r in &rows {
            t.add_row(vec![
                r.vmid.to_string(),
                r.node.clone(),
                r.claim.clone(),
                r.running.to_string(),
                r.locked.to_string(),
                r.uuid.clone(),
            ]);
        }
        print!("{}", output::render(&t));
        Ok(Exit::Ok)
    })
}
