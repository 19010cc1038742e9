//! The range assignor: for each topic, the members subscribed to it, sorted by member id,
//! each get a contiguous range of its partitions; the first `partitions % members` get one
//! more. Deterministic, so every member of a generation sees the same split.

/// A topic and the partitions one member owns of it.
pub(crate) type TopicAssignment = (String, Vec<u32>);

/// Assigns partitions; `members` are `(member id, subscribed topics)`, `partitions_of` gives
/// a topic's partition count (`None`: unknown topic, left out). Returns one assignment per
/// member, in the order of `members`, each sorted by topic.
pub(crate) fn assign_range<'a>(
    members: &[(&'a str, &'a [String])],
    partitions_of: impl Fn(&str) -> Option<u32>,
) -> Vec<Vec<TopicAssignment>> {
    let mut result: Vec<Vec<TopicAssignment>> = vec![Vec::new(); members.len()];
    let mut topics: Vec<&str> = members
        .iter()
        .flat_map(|(_, topics)| topics.iter().map(String::as_str))
        .collect();
    topics.sort_unstable();
    topics.dedup();
    for topic in topics {
        let Some(partitions) = partitions_of(topic) else {
            continue;
        };
        let mut subscribed: Vec<usize> = (0..members.len())
            .filter(|&index| members[index].1.iter().any(|t| t == topic))
            .collect();
        subscribed.sort_by_key(|&index| members[index].0);
        let count = subscribed.len() as u32;
        if count == 0 {
            continue;
        }
        let (per_member, extra) = (partitions / count, partitions % count);
        let mut next = 0u32;
        for (rank, &index) in subscribed.iter().enumerate() {
            let take = per_member + u32::from((rank as u32) < extra);
            if take > 0 {
                result[index].push((topic.to_string(), (next..next + take).collect()));
            }
            next += take;
        }
        debug_assert_eq!(next, partitions);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_ranges_in_member_order() {
        let t = topics(&["t"]);
        let members = [
            ("c", t.as_slice()),
            ("a", t.as_slice()),
            ("b", t.as_slice()),
        ];
        let result = assign_range(&members, |_| Some(7));
        assert_eq!(result[1], [("t".to_string(), vec![0, 1, 2])]);
        assert_eq!(result[2], [("t".to_string(), vec![3, 4])]);
        assert_eq!(result[0], [("t".to_string(), vec![5, 6])]);
    }

    #[test]
    fn more_members_than_partitions_and_mixed_subscriptions() {
        let both = topics(&["x", "y"]);
        let only_y = topics(&["y"]);
        let members = [
            ("m1", both.as_slice()),
            ("m2", only_y.as_slice()),
            ("m3", only_y.as_slice()),
        ];
        let result = assign_range(&members, |topic| match topic {
            "x" => Some(2),
            "y" => Some(2),
            _ => None,
        });
        assert_eq!(
            result[0],
            [("x".to_string(), vec![0, 1]), ("y".to_string(), vec![0])]
        );
        assert_eq!(result[1], [("y".to_string(), vec![1])]);
        assert!(result[2].is_empty());
        let unknown = topics(&["gone"]);
        assert!(assign_range(&[("m", unknown.as_slice())], |_| None)[0].is_empty());
    }
}
