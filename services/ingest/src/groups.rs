//! How an exchange's symbols are split across connections, kept stable across re-discoveries.

use tokio::sync::watch;

/// The symbols of each connection, kept stable across re-discoveries: a delisted symbol
/// leaves its connection, a new one joins the first connection with room, or a new
/// connection. A connection whose list empties ends and leaves the table, so listing churn
/// never grows it; every new connection gets a fresh index (its `/health` name).
pub(crate) struct Groups {
    per_connection: usize,
    next_index: usize,
    lists: Vec<Group>,
}

struct Group {
    index: usize,
    natives: Vec<String>,
    tx: watch::Sender<Vec<String>>,
}

impl Groups {
    pub(crate) fn new(per_connection: usize) -> Self {
        Self {
            per_connection: per_connection.max(1),
            next_index: 0,
            lists: Vec::new(),
        }
    }

    /// Applies the new full list; returns the connections to spawn (index, their list).
    pub(crate) fn assign(
        &mut self,
        natives: &[String],
    ) -> Vec<(usize, watch::Receiver<Vec<String>>)> {
        let wanted: std::collections::HashSet<&str> = natives.iter().map(String::as_str).collect();
        let mut held = std::collections::HashSet::new();
        let mut changed = Vec::with_capacity(self.lists.len());
        for g in &mut self.lists {
            let before = g.natives.len();
            g.natives.retain(|n| wanted.contains(n.as_str()));
            held.extend(g.natives.iter().cloned());
            changed.push(g.natives.len() != before);
        }
        let first_new = self.lists.len();
        for n in natives.iter().filter(|n| !held.contains(*n)) {
            let slot = self
                .lists
                .iter()
                .position(|g| !g.natives.is_empty() && g.natives.len() < self.per_connection);
            match slot {
                Some(i) => {
                    self.lists[i].natives.push(n.clone());
                    if let Some(c) = changed.get_mut(i) {
                        *c = true;
                    }
                }
                None => {
                    let (tx, _) = watch::channel(Vec::new());
                    self.lists.push(Group {
                        index: self.next_index,
                        natives: vec![n.clone()],
                        tx,
                    });
                    self.next_index += 1;
                }
            }
        }
        // Existing connections see their new list (an emptied one ends on it).
        for (g, changed) in self.lists.iter().zip(&changed) {
            if *changed {
                g.tx.send_replace(g.natives.clone());
            }
        }
        let mut spawned = Vec::new();
        for g in &self.lists[first_new..] {
            // The new connection's starting list, seen as its current value.
            g.tx.send_replace(g.natives.clone());
            let mut rx = g.tx.subscribe();
            rx.mark_unchanged();
            spawned.push((g.index, rx));
        }
        self.lists.retain(|g| !g.natives.is_empty());
        spawned
    }

    pub(crate) fn close(&mut self) {
        self.lists.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Groups;

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("S{i}")).collect()
    }

    #[test]
    fn churn_never_grows_the_table_and_lists_stay_stable() {
        let mut g = Groups::new(10);
        let first = g.assign(&names(0..25));
        assert_eq!(first.len(), 3, "25 symbols in connections of 10");
        assert_eq!(first[0].1.borrow().len(), 10);
        // Delist the first ten: their connection ends and leaves the table.
        let (_, rx0) = &first[0];
        assert!(g.assign(&names(10..25)).is_empty());
        assert!(
            rx0.borrow().is_empty(),
            "the emptied connection sees an empty list"
        );
        assert_eq!(g.lists.len(), 2);
        // Heavy churn: every round a fresh set of symbols; the table tracks only live ones.
        let mut max_index = 0;
        for round in 0..50 {
            let start = 1_000 + round * 30;
            for (index, rx) in g.assign(&names(start..start + 30)) {
                assert!(index >= max_index, "fresh indices");
                max_index = index;
                assert!(!rx.borrow().is_empty());
            }
            assert_eq!(g.lists.len(), 3, "30 live symbols, 3 connections");
        }
        // A surviving connection keeps its symbols when others join.
        let kept = g.lists[0].natives.clone();
        let mut more = kept.clone();
        more.push("NEW".into());
        g.assign(&more);
        assert_eq!(g.lists[0].natives[..kept.len()], kept[..]);
        assert!(
            g.lists
                .iter()
                .any(|l| l.natives.contains(&"NEW".to_owned()))
        );
    }
}
