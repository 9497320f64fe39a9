//! The pure half of a reload: what differs between the running units and a
//! freshly loaded, already validated units dir. Reading the files happens
//! outside (the runner); applying the difference is the plan's.

use crate::config::{Unit, UnitSet};

/// What a reload changes, by kind of change.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// New units: start them.
    pub added: Vec<Unit>,
    /// Units whose file is gone: stop them, then forget them.
    pub removed: Vec<String>,
    /// Changed units: stop the old definition, start the new one.
    pub replaced: Vec<Unit>,
    /// Changed router units that stay routers: applied to the running
    /// router (its listen socket is never closed and bound again).
    pub reconfigured: Vec<Unit>,
    pub unchanged: usize,
}

impl Diff {
    /// `added: a; removed: none; changed: router; unchanged: 3`.
    pub fn summary(&self) -> String {
        let list = |mut v: Vec<&str>| {
            v.sort_unstable();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        fn names(v: &[Unit]) -> Vec<&str> {
            v.iter().map(|u| u.name.as_str()).collect()
        }
        let mut changed = names(&self.replaced);
        changed.extend(names(&self.reconfigured));
        format!(
            "added: {}; removed: {}; changed: {}; unchanged: {}",
            list(names(&self.added)),
            list(self.removed.iter().map(String::as_str).collect()),
            list(changed),
            self.unchanged
        )
    }
}

/// Compares the running definitions with the loaded set.
pub fn diff<'a>(running: impl IntoIterator<Item = &'a Unit>, loaded: UnitSet) -> Diff {
    let mut d = Diff::default();
    let mut loaded = loaded.units;
    for old in running {
        let Some(pos) = loaded.iter().position(|u| u.name == old.name) else {
            d.removed.push(old.name.clone());
            continue;
        };
        let new = loaded.swap_remove(pos);
        if new == *old {
            d.unchanged += 1;
        } else if is_live_router(old) && is_live_router(&new) {
            d.reconfigured.push(new);
        } else {
            d.replaced.push(new);
        }
    }
    loaded.sort_by(|a, b| a.name.cmp(&b.name));
    d.added = loaded;
    d
}

fn is_live_router(u: &Unit) -> bool {
    u.enabled && u.router.is_some()
}
