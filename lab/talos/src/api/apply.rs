//! `ApplyConfiguration`, in configured mode (the apply modes, try mode with
//! its rollback) and in maintenance mode (the first configuration a machine
//! receives).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_talos_proto::machine as pb;
use tidepool_talos_proto::machine::apply_configuration_request::Mode;
use tidepool_talos_proto::machine::{ApplyConfigurationRequest, ApplyConfigurationResponse};
use tonic::{Request, Response, Status};

use super::lifecycle::{apply_staged, reboot_configured};
use super::services::running;
use super::{MachineApi, TRY_TIMEOUT, apply_mode, mode_flag, mode_of};
use crate::config::{ConfigError, MachineConfig};
use crate::lab::{ApplyMode, Inner, MachinePhase, ServingMode, TalosEvent};

/// `ApplyConfiguration` on a configured machine.
pub(super) async fn apply_configured(
    lab: Arc<Inner>,
    ip: IpAddr,
    req: ApplyConfigurationRequest,
) -> Result<pb::ApplyConfiguration, Status> {
    running(&lab, ip)?;
    let config = MachineConfig::parse(&req.data)
        .map_err(|e: ConfigError| Status::invalid_argument(e.to_string()))?;
    let requested = mode_of(req.mode);
    // Every change the emulator models applies live, so AUTO resolves to
    // NO_REBOOT.
    let resolved = if requested == Mode::Auto {
        Mode::NoReboot
    } else {
        requested
    };
    let warnings = config.warnings().to_vec();
    if req.dry_run {
        let same = lab
            .with_machine(ip, |m| m.config.as_ref().map(|c| c.raw() == config.raw()))
            .flatten()
            .unwrap_or(false);
        let summary = if same {
            "No changes."
        } else {
            "Config diff: the configuration changes."
        };
        return Ok(pb::ApplyConfiguration {
            metadata: None,
            warnings,
            mode: resolved as i32,
            mode_details: format!(
                "Dry run summary:\nApplied configuration with mode {}\n{summary}",
                resolved.as_str_name()
            ),
        });
    }
    let raw = config.raw().to_owned();
    let details = match resolved {
        Mode::Staged => {
            lab.with_machine(ip, |m| m.staged = Some(config));
            "Staged configuration to be applied after the next reboot".to_owned()
        }
        Mode::Reboot => {
            lab.with_machine(ip, |m| m.config = Some(config));
            "Applied configuration with a reboot".to_owned()
        }
        Mode::Try => {
            let timeout = req
                .try_mode_timeout
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(TRY_TIMEOUT);
            apply_for_a_while(&lab, ip, config, timeout);
            format!(
                "Applied configuration in try mode: it will be rolled back in {}s unless applied again",
                timeout.as_secs()
            )
        }
        _ => {
            lab.with_machine(ip, |m| {
                m.config = Some(config);
                m.try_token += 1;
            });
            "Applied configuration without a reboot".to_owned()
        }
    };
    lab.emit(TalosEvent::ConfigApplied {
        ip,
        config_yaml: raw,
        mode: apply_mode(resolved),
    });
    if resolved == Mode::Reboot {
        reboot_configured(&lab, ip);
    }
    Ok(pb::ApplyConfiguration {
        metadata: None,
        warnings,
        mode: resolved as i32,
        mode_details: details,
    })
}

/// Try mode: applies `config` now and puts the previous configuration back
/// after `timeout`, unless another apply came meanwhile or the machine is
/// down.
fn apply_for_a_while(lab: &Arc<Inner>, ip: IpAddr, config: MachineConfig, timeout: Duration) {
    let state = lab.with_machine(ip, |m| {
        let previous = m.config.replace(config);
        m.try_token += 1;
        (previous, m.try_token)
    });
    let Some((Some(previous), token)) = state else {
        return;
    };
    let inner = lab.clone();
    tokio::spawn(async move {
        inner.clock.sleep(timeout).await;
        let reverted = inner
            .with_machine(ip, |m| {
                if m.try_token != token || m.serving.is_none() {
                    return None;
                }
                let raw = previous.raw().to_owned();
                m.config = Some(previous);
                Some(raw)
            })
            .flatten();
        if let Some(config_yaml) = reverted {
            inner.emit(TalosEvent::ConfigApplied {
                ip,
                config_yaml,
                mode: ApplyMode::NoReboot,
            });
        }
    });
}

impl MachineApi {
    /// `ApplyConfiguration` in maintenance mode.
    pub(super) async fn apply_maintenance(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        self.check_current()?;
        self.lab.fault("ApplyConfiguration", self.ip).await?;
        let req = request.into_inner();
        let mode = mode_of(req.mode);
        if !matches!(mode, Mode::Try | Mode::Reboot | Mode::Auto) {
            return Err(Status::unimplemented(format!(
                "apply configuration --mode='{}' is not supported in maintenance mode",
                mode_flag(mode)
            )));
        }
        let config = MachineConfig::parse(&req.data).map_err(|e| match e {
            ConfigError::Load(_) => Status::unknown(e.to_string()),
            ConfigError::Invalid(_) => Status::invalid_argument(e.to_string()),
        })?;
        let mut reply = pb::ApplyConfiguration {
            metadata: None,
            warnings: config.warnings().to_vec(),
            mode: 0,
            mode_details: String::new(),
        };
        if req.dry_run {
            reply.mode_details = "Dry run summary:\nNode is running in maintenance mode and does not have a config yet.".to_owned();
            return Ok(Response::new(ApplyConfigurationResponse {
                messages: vec![reply],
            }));
        }
        // Only the first apply wins: the maintenance server goes away.
        let accepted = self
            .lab
            .with_machine(self.ip, |m| {
                if m.epoch != self.epoch || m.phase != MachinePhase::Maintenance {
                    return false;
                }
                m.staged = Some(config.clone());
                m.phase = MachinePhase::Installing;
                true
            })
            .unwrap_or(false);
        if !accepted {
            return Err(Status::unavailable(
                "connection closed: the machine is installing",
            ));
        }
        self.lab.emit(TalosEvent::ConfigApplied {
            ip: self.ip,
            config_yaml: config.raw().to_owned(),
            mode: ApplyMode::Reboot,
        });
        let install = self.lab.durations.install;
        self.lab.cycle(
            self.ip,
            MachinePhase::Installing,
            Duration::ZERO,
            install,
            Some(ServingMode::Configured),
            apply_staged,
        );
        Ok(Response::new(ApplyConfigurationResponse {
            messages: vec![reply],
        }))
    }
}
