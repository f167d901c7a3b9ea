//! The configured machine's lifecycle handlers: reboot, shutdown, reset and
//! upgrade, with a staged configuration taking effect on the way.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_lab_sim::Service;
use tidepool_talos_proto::machine as pb;
use tidepool_talos_proto::machine::{
    RebootRequest, ResetRequest, ShutdownRequest, UpgradeRequest, reset_request,
};
use tonic::Status;

use super::services::running;
use crate::lab::{Inner, MachinePhase, ServingMode, TalosEvent, WipeMode};

pub(super) async fn reboot(
    lab: Arc<Inner>,
    ip: IpAddr,
    _: RebootRequest,
) -> Result<pb::Reboot, Status> {
    running(&lab, ip)?;
    reboot_configured(&lab, ip);
    Ok(pb::Reboot {
        metadata: None,
        actor_id: lab.next_actor_id(),
    })
}

/// Reports the reboot and takes the machine down and up again in
/// configured mode, a staged configuration taking effect on the way.
pub(super) fn reboot_configured(lab: &Arc<Inner>, ip: IpAddr) {
    lab.emit(TalosEvent::Rebooted { ip });
    let down = lab.durations.reboot;
    lab.cycle(
        ip,
        MachinePhase::Rebooting,
        Duration::ZERO,
        down,
        Some(ServingMode::Configured),
        apply_staged,
    );
}

/// Makes a staged configuration the current one.
pub(super) fn apply_staged(m: &mut crate::lab::Machine) {
    if let Some(staged) = m.staged.take() {
        m.config = Some(staged);
    }
}

pub(super) async fn shutdown(
    lab: Arc<Inner>,
    ip: IpAddr,
    req: ShutdownRequest,
) -> Result<pb::Shutdown, Status> {
    running(&lab, ip)?;
    lab.emit(TalosEvent::ShutdownRequested {
        ip,
        force: req.force,
    });
    let down = lab.durations.shutdown;
    lab.cycle(
        ip,
        MachinePhase::ShuttingDown,
        Duration::ZERO,
        down,
        None,
        |_| {},
    );
    Ok(pb::Shutdown {
        metadata: None,
        actor_id: lab.next_actor_id(),
    })
}

pub(super) async fn reset(
    lab: Arc<Inner>,
    ip: IpAddr,
    req: ResetRequest,
) -> Result<pb::Reset, Status> {
    running(&lab, ip)?;
    let wipe = match reset_request::WipeMode::try_from(req.mode) {
        Ok(reset_request::WipeMode::SystemDisk) => WipeMode::SystemDisk,
        Ok(reset_request::WipeMode::UserDisks) => WipeMode::UserDisks,
        _ => WipeMode::All,
    };
    if !req.user_disks_to_wipe.is_empty() && wipe == WipeMode::SystemDisk {
        return Err(Status::unknown(
            "reset failed: invalid input, wipe mode SYSTEM_DISK doesn't support UserDisksToWipe parameter",
        ));
    }
    let partitions: Vec<String> = req
        .system_partitions_to_wipe
        .iter()
        .filter(|p| p.wipe)
        .map(|p| p.label.clone())
        .collect();
    let wipes_state = wipe != WipeMode::UserDisks
        && (req.system_partitions_to_wipe.is_empty() || partitions.iter().any(|p| p == "STATE"));
    lab.emit(TalosEvent::ResetRequested {
        ip,
        graceful: req.graceful,
        reboot: req.reboot,
        wipe,
        partitions,
    });
    let next = match (req.reboot, wipes_state) {
        (false, _) => None,
        (true, true) => Some(ServingMode::Maintenance),
        (true, false) => Some(ServingMode::Configured),
    };
    let down = if req.reboot {
        lab.durations.reboot
    } else {
        lab.durations.shutdown
    };
    lab.cycle(
        ip,
        MachinePhase::Resetting,
        Duration::ZERO,
        down,
        next,
        move |m| {
            if wipes_state {
                m.config = None;
                m.staged = None;
            }
        },
    );
    Ok(pb::Reset {
        metadata: None,
        actor_id: lab.next_actor_id(),
    })
}

/// The version tag of an installer image reference
/// (`ghcr.io/siderolabs/installer:v1.10.6` → `v1.10.6`).
pub(super) fn image_tag(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag.to_owned())
}

/// The fault operation (`UpgradeBoot:<ip>`) that makes an accepted
/// upgrade's new image fail to boot, so the machine boots back into the
/// old one (A/B rollback).
pub const UPGRADE_BOOT_FAULT: &str = "UpgradeBoot";

/// Accepts an upgrade. A plain upgrade installs (the lab's upgrade time)
/// and reboots into the image's version; a staged one (`stage`) only
/// records the image and reboots at once, the install running early in
/// the next boot followed by a second reboot, as Talos does. A boot fault
/// on the new image rolls the machine back to the version it had.
pub(super) async fn upgrade(
    lab: Arc<Inner>,
    ip: IpAddr,
    req: UpgradeRequest,
) -> Result<pb::Upgrade, Status> {
    running(&lab, ip)?;
    if req.image.is_empty() {
        return Err(Status::invalid_argument("image is required"));
    }
    lab.emit(TalosEvent::UpgradeRequested {
        ip,
        image: req.image.clone(),
        stage: req.stage,
    });
    let tag = image_tag(&req.image);
    let boot_fails = lab
        .faults
        .check(Service::Talos, &format!("{UPGRADE_BOOT_FAULT}:{ip}"))
        .error
        .is_some();
    let (install, reboot) = (lab.durations.upgrade, lab.durations.reboot);
    let (phase, wait, down) = if req.stage {
        (
            MachinePhase::Rebooting,
            Duration::ZERO,
            reboot + install + reboot,
        )
    } else {
        (MachinePhase::Upgrading, install, reboot)
    };
    // A failed boot of the new image costs one more reboot back into the old.
    let down = if boot_fails { down + reboot } else { down };
    let events = lab.clone();
    lab.cycle(
        ip,
        phase,
        wait,
        down,
        Some(ServingMode::Configured),
        move |m| {
            apply_staged(m);
            match tag {
                Some(tag) if boot_fails => events.emit(TalosEvent::UpgradeRolledBack {
                    ip,
                    failed_version: tag,
                    version: m.version.clone(),
                }),
                Some(tag) => m.version = tag,
                None => {}
            }
        },
    );
    Ok(pb::Upgrade {
        metadata: None,
        ack: "Upgrade request received".to_owned(),
        actor_id: lab.next_actor_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installer_images_name_their_version_tag() {
        assert_eq!(
            image_tag("ghcr.io/siderolabs/installer:v1.10.6").as_deref(),
            Some("v1.10.6")
        );
        assert_eq!(
            image_tag("localhost:5000/installer:v1.11.0@sha256:abc").as_deref(),
            Some("v1.11.0")
        );
        assert_eq!(image_tag("localhost:5000/installer"), None);
    }
}
