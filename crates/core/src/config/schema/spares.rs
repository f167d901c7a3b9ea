//! A pool's `spares:` section: how many cold spares the pool keeps and of
//! which of its sizes. The count must leave room for at least one active
//! worker under `maxNodes`, since spares count against it.

use crate::config::reader::{Errors, Obj, string, uint32};
use crate::config::yaml::Node;
use crate::pool::Limits;
use crate::safety::did_you_mean;
use crate::spares::Spares;

/// The pool's `spares` section, checked against its sizes and limits (when
/// they are known); `None` when it is absent or wrong (the error is
/// recorded).
pub(super) fn spares(
    section: Option<(&Node, String)>,
    sizes: Option<&[String]>,
    limits: Option<&Limits>,
    errs: &mut Errors,
) -> Option<Option<Spares>> {
    let Some((node, path)) = section else {
        return Some(None);
    };
    let mut obj = Obj::new(node, &path, errs)?;
    let count = obj
        .require("count", errs)
        .and_then(|(n, p)| uint32(n, &p, errs));
    let size = obj
        .require("size", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    obj.finish(errs);
    let (count, size) = (count?, size?);
    if let Some(sizes) = sizes
        && !sizes.contains(&size.value)
    {
        let hint = did_you_mean(&size.value, sizes.iter().map(String::as_str));
        errs.at(
            &size.path,
            size.mark,
            format!(
                "size `{}` is not one of the pool's sizes ({}){hint}",
                size.value,
                sizes.join(", ")
            ),
        );
        return None;
    }
    if let Some(limits) = limits
        && count.value >= limits.max_nodes.max(1)
    {
        errs.at(
            &count.path,
            count.mark,
            format!(
                "{} spares leave no room under maxNodes ({}): spares count against it",
                count.value, limits.max_nodes
            ),
        );
        return None;
    }
    Some(Some(Spares {
        count: count.value,
        size: size.value,
    }))
}
