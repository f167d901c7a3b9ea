//! The `sizes` section: the VM shapes workers are made in (vCPUs, memory,
//! disk, GPU), what their nodes offer the scheduler, and whether they carry
//! the `workload-size` taint.

use std::collections::BTreeMap;

use crate::config::SizeEntry;
use crate::config::reader::{Errors, Obj, Spanned, boolean, quantity, string, uint32};
use crate::config::yaml::{Mark, Node, Value};
use crate::pool::{DEFAULT_MAX_PODS, Resources, Size};

use super::fields::{at_least_one, label_value, named_entries};

const MIB: u64 = 1 << 20;

/// The `sizes` mapping merged over the default sizes of spec §2: a size
/// of the file replaces the default of its name field by field.
pub(super) fn sizes(
    section: Option<(&Node, String)>,
    errs: &mut Errors,
) -> BTreeMap<String, Spanned<SizeEntry>> {
    let mut out: BTreeMap<String, Spanned<SizeEntry>> = Size::defaults()
        .into_iter()
        .map(|size| {
            (
                size.name.clone(),
                Spanned {
                    value: SizeEntry { size, taint: false },
                    mark: Mark::default(),
                    path: String::new(),
                },
            )
        })
        .collect();
    let Some((node, path)) = section else {
        return out;
    };
    let Value::Map(entries) = &node.value else {
        errs.at(
            &path,
            node.mark,
            format!(
                "expected a mapping of size name to size, found {}",
                node.kind()
            ),
        );
        return out;
    };
    named_entries(
        entries,
        &path,
        "size name",
        errs,
        &mut out,
        |out, name, n, p, e| {
            let base = out.get(name).map(|s| s.value.clone());
            size(name, base, n, p, e)
        },
    );
    out
}

/// A memory quantity as a positive whole number of MiB.
fn whole_mib(q: &Spanned<crate::quantity::Quantity>, errs: &mut Errors) -> Option<u64> {
    let bytes = u64::try_from(q.value.units_ceil()).unwrap_or(u64::MAX);
    if bytes % MIB != 0 || bytes == 0 {
        errs.at(
            &q.path,
            q.mark,
            format!(
                "memory must be a positive whole number of MiB, got {} bytes",
                bytes
            ),
        );
        return None;
    }
    Some(bytes / MIB)
}

/// One size, `name`, over `base`, the default of that name if there is one
/// (without it every shape field is required).
fn size(
    name: &str,
    base: Option<SizeEntry>,
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> Option<SizeEntry> {
    let mut obj = Obj::new(node, path, errs)?;
    let required = base.is_none();
    fn field<'a>(
        obj: &mut Obj<'a>,
        required: bool,
        key: &'static str,
        errs: &mut Errors,
    ) -> Option<(&'a Node, String)> {
        if required {
            obj.require(key, errs)
        } else {
            obj.get(key)
        }
    }
    let vcpu = field(&mut obj, required, "vcpu", errs).and_then(|(n, p)| {
        let v = uint32(n, &p, errs)?;
        if v.value == 0 || v.value > 512 {
            errs.at(
                &p,
                v.mark,
                format!("vcpu must be between 1 and 512, got {}", v.value),
            );
            return None;
        }
        Some(v.value)
    });
    let memory = field(&mut obj, required, "memory", errs)
        .and_then(|(n, p)| quantity(n, &p, errs))
        .and_then(|q| whole_mib(&q, errs));
    let disk = field(&mut obj, required, "disk", errs)
        .and_then(|(n, p)| quantity(n, &p, errs))
        .map(|q| {
            let bytes = q.value.units_ceil();
            u64::try_from(
                bytes.div_euclid(1_000_000_000) + i128::from(bytes.rem_euclid(1_000_000_000) != 0),
            )
            .unwrap_or(u64::MAX)
        });
    let taint = obj.get("taint").and_then(|(n, p)| boolean(n, &p, errs));
    let gpu = obj.get("gpu").map(|(n, p)| gpu_spec(n, &p, errs));
    let allocatable = obj.get("allocatable");
    obj.finish(errs);

    let mut entry = base.unwrap_or(SizeEntry {
        size: Size {
            name: name.to_owned(),
            vcpu: 0,
            memory_mib: 0,
            disk_gb: 0,
            gpu: None,
            allocatable: Resources::default(),
        },
        taint: false,
    });
    let shape_changed = vcpu.is_some() || memory.is_some() || gpu.is_some();
    if let Some(v) = vcpu {
        entry.size.vcpu = v;
    }
    if let Some(m) = memory {
        entry.size.memory_mib = m;
    }
    if let Some(d) = disk {
        entry.size.disk_gb = d;
    }
    if let Some(t) = taint {
        entry.taint = t;
    }
    if let Some(g) = gpu {
        entry.size.gpu = Some(g?);
    }
    if entry.size.vcpu == 0 || entry.size.memory_mib == 0 {
        return None;
    }
    if shape_changed {
        entry.size.allocatable = default_allocatable(&entry.size);
    }
    if let Some((n, p)) = allocatable {
        entry.size.allocatable = allocatable_section(&entry.size, n, &p, errs)?;
    }
    Some(entry)
}

/// What the kubelet of a worker of `size` offers when the file does not
/// say: the vCPUs less 200m, the memory less a sixteenth, nine tenths of
/// the disk, and the GPUs.
fn default_allocatable(size: &Size) -> Resources {
    let memory = size.memory_mib * MIB;
    let mut extended = BTreeMap::new();
    if let Some(gpu) = &size.gpu {
        extended.insert("nvidia.com/gpu".to_owned(), u64::from(gpu.count));
    }
    Resources {
        cpu_milli: (u64::from(size.vcpu) * 1000).saturating_sub(200),
        memory_bytes: memory - memory / 16,
        ephemeral_storage_bytes: size.disk_gb * 1_000_000_000 * 9 / 10,
        pods: DEFAULT_MAX_PODS,
        extended,
    }
}

/// A size's `allocatable` overrides, none above the size itself.
fn allocatable_section(
    size: &Size,
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> Option<Resources> {
    let mut obj = Obj::new(node, path, errs)?;
    let mut res = default_allocatable(size);
    let mut ok = true;
    if let Some((n, p)) = obj.get("cpu")
        && let Some(q) = quantity(n, &p, errs)
    {
        let milli = u64::try_from(q.value.milli()).unwrap_or(u64::MAX);
        if milli > u64::from(size.vcpu) * 1000 {
            errs.at(
                &p,
                q.mark,
                format!(
                    "allocatable cpu {milli}m is more than the size's {} vCPUs",
                    size.vcpu
                ),
            );
            ok = false;
        }
        res.cpu_milli = milli;
    }
    if let Some((n, p)) = obj.get("memory")
        && let Some(q) = quantity(n, &p, errs)
    {
        let bytes = u64::try_from(q.value.units_ceil()).unwrap_or(u64::MAX);
        if bytes > size.memory_mib * MIB {
            errs.at(
                &p,
                q.mark,
                format!(
                    "allocatable memory is more than the size's {} MiB",
                    size.memory_mib
                ),
            );
            ok = false;
        }
        res.memory_bytes = bytes;
    }
    if let Some((n, p)) = obj.get("pods")
        && let Some(v) = uint32(n, &p, errs)
    {
        if v.value == 0 {
            errs.at(&p, v.mark, "must be at least 1");
            ok = false;
        }
        res.pods = v.value;
    }
    if let Some((n, p)) = obj.get("ephemeralStorage")
        && let Some(q) = quantity(n, &p, errs)
    {
        res.ephemeral_storage_bytes = u64::try_from(q.value.units_ceil()).unwrap_or(u64::MAX);
    }
    obj.finish(errs);
    ok.then_some(res)
}

/// A size's `gpu`: the device count, class, memory, CUDA version and the
/// PCI resource mapping the devices come from.
fn gpu_spec(node: &Node, path: &str, errs: &mut Errors) -> Option<crate::pool::GpuSpec> {
    let mut obj = Obj::new(node, path, errs)?;
    let count = obj
        .get("count")
        .and_then(|(n, p)| at_least_one(n, &p, errs))
        .unwrap_or(1);
    let class = obj
        .require("class", errs)
        .and_then(|(n, p)| label_value(n, &p, errs));
    let memory = obj
        .require("memory", errs)
        .and_then(|(n, p)| quantity(n, &p, errs))
        .and_then(|q| whole_mib(&q, errs));
    let cuda = obj
        .get("cuda")
        .and_then(|(n, p)| label_value(n, &p, errs))
        .unwrap_or_default();
    let mapping = obj
        .require("mapping", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    obj.finish(errs);
    Some(crate::pool::GpuSpec {
        count,
        class: class?,
        memory_gib: u32::try_from(memory? / 1024).unwrap_or(u32::MAX),
        cuda,
        mapping: mapping?.value,
    })
}
