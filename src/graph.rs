//! Pure graph algorithms over unit names: cycle detection for load errors.
//! Start and stop order are decided live by the manager from the same edges
//! (a unit starts when its dependencies are settled, stops after its
//! dependents), so no static order is computed here.

use std::collections::{BTreeSet, HashMap};

/// Every elementary cycle reachable by depth-first search, each once,
/// rotated to start at its smallest name: `[a, b, c]` means a → b → c → a.
/// `nodes` is (name, names it depends on).
pub fn find_cycles(nodes: &[(&str, Vec<&str>)]) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Gray,
        Black,
    }
    let edges: HashMap<&str, &Vec<&str>> = nodes.iter().map(|(n, d)| (*n, d)).collect();
    let mut color: HashMap<&str, Color> = nodes.iter().map(|(n, _)| (*n, Color::White)).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut roots: Vec<&str> = nodes.iter().map(|(n, _)| *n).collect();
    roots.sort_unstable();
    for root in roots {
        if color.get(root) != Some(&Color::White) {
            continue;
        }
        // Iterative DFS: (node, index of next edge to follow).
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        color.insert(root, Color::Gray);
        while let Some((node, next)) = stack.last().copied() {
            let deps = edges.get(node).map(|d| d.as_slice()).unwrap_or(&[]);
            if let Some(dep) = deps.get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match color.get(dep).copied() {
                    Some(Color::White) => {
                        color.insert(dep, Color::Gray);
                        stack.push((dep, 0));
                    }
                    Some(Color::Gray) => {
                        let start = stack.iter().position(|(n, _)| n == dep).unwrap_or(0);
                        let cycle: Vec<String> = stack[start..].iter().map(|(n, _)| n.to_string()).collect();
                        found.insert(rotate_to_min(cycle));
                    }
                    _ => {}
                }
            } else {
                color.insert(node, Color::Black);
                stack.pop();
            }
        }
    }
    found.into_iter().collect()
}

fn rotate_to_min(mut cycle: Vec<String>) -> Vec<String> {
    if let Some(min) = cycle.iter().enumerate().min_by(|a, b| a.1.cmp(b.1)).map(|(i, _)| i) {
        cycle.rotate_left(min);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case<'a> = (&'a [(&'a str, &'a [&'a str])], &'a [&'a [&'a str]]);

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (&[("a", &[]), ("b", &["a"])], &[]),
            (&[("a", &["b"]), ("b", &["a"])], &[&["a", "b"]]),
            (&[("c", &["a"]), ("a", &["b"]), ("b", &["c"])], &[&["a", "b", "c"]]),
            (&[("a", &["a"])], &[&["a"]]),
            // Diamond: no cycle.
            (&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])], &[]),
            // Two separate cycles.
            (&[("a", &["b"]), ("b", &["a"]), ("x", &["y"]), ("y", &["x"])], &[&["a", "b"], &["x", "y"]]),
        ];
        for (nodes, want) in cases {
            let nodes: Vec<(&str, Vec<&str>)> = nodes.iter().map(|(n, d)| (*n, d.to_vec())).collect();
            let want: Vec<Vec<String>> = want.iter().map(|c| c.iter().map(|s| s.to_string()).collect()).collect();
            assert_eq!(find_cycles(&nodes), want, "{nodes:?}");
        }
    }
}
