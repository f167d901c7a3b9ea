//! The `join` section: how new workers receive their configuration (the
//! Talos API, or nocloud user-data for Talos or cloud-init images) and the
//! secrets that go with it, by reference.

use std::time::Duration;

use crate::config::reader::{Errors, Obj, Spanned, string, uint};
use crate::config::yaml::Node;
use crate::config::{Join, JoinMethod, NocloudFlavor};
use crate::safety::did_you_mean;

use super::fields::positive_duration;
use super::secrets::{inline_secret, secret_ref};

/// A field that may be absent: its node and path.
type Field<'a> = Option<(&'a Node, String)>;

/// The fields that only some join methods read.
struct MethodFields<'a> {
    flavor: Field<'a>,
    port: Field<'a>,
    listen: Field<'a>,
    advertise: Field<'a>,
}

/// The `join` section.
pub(super) fn join_section(node: &Node, path: &str, errs: &mut Errors) -> Option<Join> {
    let mut obj = Obj::new(node, path, errs)?;
    let method = obj
        .require("method", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    let fields = MethodFields {
        flavor: obj.get("flavor"),
        port: obj.get("talosPort"),
        listen: obj.get("listen"),
        advertise: obj.get("advertiseUrl"),
    };
    let worker_config = obj
        .require("workerConfigFrom", errs)
        .and_then(|(n, p)| secret_ref(n, &p, errs));
    let talosconfig = match obj.get("talosconfigFrom") {
        Some((n, p)) => secret_ref(n, &p, errs).map(Some),
        None => Some(None),
    };
    let join_command = match obj.get("joinCommandFrom") {
        Some((n, p)) => secret_ref(n, &p, errs).map(|r| Some((r, n.mark, p))),
        None => Some(None),
    };
    let registration_timeout = obj
        .get("registrationTimeout")
        .and_then(|(n, p)| positive_duration(n, &p, errs))
        .unwrap_or(Duration::from_secs(300));
    obj.finish_with(errs, |key| match key {
        "workerConfig" | "userData" => Some(inline_secret(key, "workerConfigFrom")),
        "talosconfig" => Some(inline_secret(key, "talosconfigFrom")),
        "joinCommand" => Some(inline_secret(key, "joinCommandFrom")),
        _ => None,
    });
    let method = join_method(&method?, fields, node, path, errs)?;
    let join_command = join_command?;
    let cloud_init = matches!(
        method,
        JoinMethod::Nocloud {
            flavor: NocloudFlavor::CloudInit,
            ..
        }
    );
    match (&join_command, cloud_init) {
        (None, true) => {
            errs.at(
                path,
                node.mark,
                "the nocloud cloud-init flavor needs `joinCommandFrom`, the `kubeadm join` command by reference",
            );
            return None;
        }
        (Some((_, mark, p)), false) => {
            errs.at(
                p,
                *mark,
                "only applies to the nocloud join method with flavor cloud-init",
            );
            return None;
        }
        _ => {}
    }
    Some(Join {
        method,
        worker_config: worker_config?,
        talosconfig: talosconfig?,
        join_command: join_command.map(|(r, _, _)| r),
        registration_timeout,
    })
}

/// Records that `field`, if given, only applies to the `which` method.
fn not_for(errs: &mut Errors, field: &Field<'_>, which: &str) {
    if let Some((n, p)) = field {
        errs.at(
            p,
            n.mark,
            format!("only applies to the {which} join method"),
        );
    }
}

/// The join method named by `method`, with the fields it reads; the fields
/// of the other method are reported.
fn join_method(
    method: &Spanned<String>,
    fields: MethodFields<'_>,
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> Option<JoinMethod> {
    match method.value.as_str() {
        "talos-api" => {
            not_for(errs, &fields.flavor, "nocloud");
            not_for(errs, &fields.listen, "nocloud");
            not_for(errs, &fields.advertise, "nocloud");
            let port = match fields.port {
                Some((n, p)) => talos_port(n, &p, errs)?,
                None => 50000,
            };
            Some(JoinMethod::TalosApi { port })
        }
        "nocloud" => {
            not_for(errs, &fields.port, "talos-api");
            nocloud(fields, node, path, errs)
        }
        other => {
            let hint = did_you_mean(other, ["talos-api", "nocloud"]);
            errs.at(
                &method.path,
                method.mark,
                format!("unknown join method `{other}`{hint}"),
            );
            None
        }
    }
}

/// The Talos API port: a TCP port other than 0.
fn talos_port(n: &Node, p: &str, errs: &mut Errors) -> Option<u16> {
    let v = uint(n, p, errs)?;
    match u16::try_from(v.value) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            errs.at(p, v.mark, format!("{} is not a TCP port", v.value));
            None
        }
    }
}

/// The nocloud method: its flavor, listen address and advertised URL.
fn nocloud(
    fields: MethodFields<'_>,
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> Option<JoinMethod> {
    let flavor = match fields.flavor {
        Some((n, p)) => {
            let v = string(n, &p, errs)?;
            match v.value.as_str() {
                "talos" => NocloudFlavor::Talos,
                "cloud-init" => NocloudFlavor::CloudInit,
                other => {
                    errs.at(
                        &p,
                        v.mark,
                        format!("unknown flavor `{other}`; expected talos or cloud-init"),
                    );
                    return None;
                }
            }
        }
        None => NocloudFlavor::Talos,
    };
    let listen = fields
        .listen
        .and_then(|(n, p)| string(n, &p, errs))
        .map_or_else(|| "0.0.0.0:8088".to_owned(), |v| v.value);
    let Some((n, p)) = fields.advertise else {
        errs.at(path, node.mark, "the nocloud method needs `advertiseUrl`, the base URL VMs reach Tidepool's user-data server at");
        return None;
    };
    let url = string(n, &p, errs)?;
    if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
        errs.at(
            &p,
            url.mark,
            format!("`{}` must be an http:// or https:// URL", url.value),
        );
        return None;
    }
    Some(JoinMethod::Nocloud {
        flavor,
        listen,
        advertise_url: url.value.trim_end_matches('/').to_owned(),
    })
}
