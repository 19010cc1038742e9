//! The members one share partition has seen: member ids (chosen by clients) mapped to small
//! numbers that the in-flight window stores, with the time each was last seen.
//!
//! Numbers are never reused, so a record locked by a member that was forgotten can never be
//! settled by another member that happens to get a recycled slot. The table is bounded: when
//! full, members idle for longer than the idle time are forgotten; if none is, new members are
//! refused (Throttled) until some go idle.

use std::collections::HashMap;

use super::window::NO_HOLDER;

/// Members one share partition remembers at most.
pub(crate) const MEMBERS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Seen {
    number: u32,
    last_seen_ms: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct MemberTable {
    by_id: HashMap<String, Seen>,
    last_number: u32,
}

impl MemberTable {
    /// The number of `member_id`, registering it (seen now) when `register` is set. `None` for
    /// an unknown member when not registering, or when the table is full of active members.
    pub(crate) fn number(
        &mut self,
        member_id: &str,
        now_ms: u64,
        idle_ms: u64,
        register: bool,
    ) -> Option<u32> {
        if let Some(seen) = self.by_id.get_mut(member_id) {
            seen.last_seen_ms = now_ms;
            return Some(seen.number);
        }
        if !register {
            return None;
        }
        if self.by_id.len() >= MEMBERS_MAX {
            self.by_id
                .retain(|_, seen| now_ms.saturating_sub(seen.last_seen_ms) < idle_ms);
            if self.by_id.len() >= MEMBERS_MAX {
                return None;
            }
        }
        self.last_number = self.last_number.wrapping_add(1).max(NO_HOLDER + 1);
        let number = self.last_number;
        self.by_id.insert(
            member_id.to_string(),
            Seen {
                number,
                last_seen_ms: now_ms,
            },
        );
        Some(number)
    }

    /// Forgets `member_id` (it left). Its number is not reused, so a late acknowledgement
    /// under its id, which registers nothing, finds no member.
    pub(crate) fn remove(&mut self, member_id: &str) {
        self.by_id.remove(member_id);
    }

    /// Members seen within `idle_ms`.
    pub(crate) fn active(&self, now_ms: u64, idle_ms: u64) -> impl Iterator<Item = &str> {
        self.by_id
            .iter()
            .filter(move |(_, seen)| now_ms.saturating_sub(seen.last_seen_ms) < idle_ms)
            .map(|(id, _)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_never_reused() {
        let mut table = MemberTable::default();
        let a = table.number("a", 0, 100, true).unwrap();
        assert_eq!(table.number("a", 5, 100, false), Some(a));
        assert_eq!(table.number("b", 5, 100, false), None);
        let b = table.number("b", 50, 100, true).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, NO_HOLDER);
        assert_eq!(table.active(60, 100).count(), 2);
        assert_eq!(table.active(120, 100).collect::<Vec<_>>(), ["b"]);
    }
}
