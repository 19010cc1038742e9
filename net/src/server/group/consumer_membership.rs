//! Members of a consumer group that use Kafka's consumer group protocol (KIP-848:
//! ConsumerGroupHeartbeat, the client's `group.protocol=consumer`), on the group's
//! coordinator.
//!
//! There are no rebalances to join: each member heartbeats, and the coordinator answers with
//! the partitions it may own now. The target assignment is the range assignor's over the
//! current members (as for the classic protocol), and each member is moved towards its target
//! one heartbeat at a time, never giving a partition to a member while another still owns it:
//! - a member that holds partitions outside its target is first told its assignment without
//!   them (its epoch stays); they stay its own, as being revoked, until a heartbeat of it lists
//!   the partitions it owns without them (what a member says it owns counts only within what
//!   it was given: a claim cannot take another member's partitions);
//! - a member whose assignment lacks partitions of its target gets those no other member holds
//!   or still owns, under a new epoch.
//!
//! A member joins with epoch 0 and a member id its client made, heartbeats with the epoch it
//! was given (or the one before, while the newest answer may be in flight, if it owns nothing
//! beyond its assignment), and leaves with epoch -1 (or -2, a static member's leave), when its
//! session expires, or when it does not revoke partitions within its rebalance timeout.
//! Commits come from members with their current or previous epoch, for partitions they own.
//! Pure state: time is passed in.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::assignor::{assign_range, TopicAssignment};
use crate::error_code::ErrorCode;
use crate::server::message::Failure;

/// Time without a heartbeat after which a member is removed (Kafka's
/// `group.consumer.session.timeout.ms` default).
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// How often members are asked to heartbeat (Kafka's `group.consumer.heartbeat.interval.ms`).
pub(crate) const HEARTBEAT_INTERVAL_MS: i32 = 5_000;
/// Longest member id accepted (kept while the member is in the group).
const MEMBER_ID_BYTES_MAX: usize = 255;
/// Most topics one member may subscribe to.
const SUBSCRIBED_TOPICS_MAX: usize = 1_000;
/// Longest time a member may take to revoke partitions (longer rebalance timeouts are cut).
const REBALANCE_TIMEOUT_MAX: Duration = Duration::from_secs(3_600);
/// A joining member's rebalance timeout when it names none (Kafka's `max.poll.interval.ms`).
const REBALANCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);

/// Epochs with a meaning of their own in a heartbeat.
pub(crate) const JOIN_EPOCH: i32 = 0;
pub(crate) const LEAVE_EPOCH: i32 = -1;
pub(crate) const STATIC_LEAVE_EPOCH: i32 = -2;

type Partitions = BTreeSet<(String, u32)>;

#[derive(Debug)]
struct Member {
    id: String,
    epoch: i32,
    previous_epoch: i32,
    topics: Vec<String>,
    /// What the member was last told it may own.
    assigned: Partitions,
    /// Partitions taken out of its assignment that it has not yet said it gave up.
    revoking: Partitions,
    rebalance_timeout: Duration,
    /// Set while the member has partitions to revoke: it is removed past this.
    revoke_by: Option<Instant>,
    last_seen: Instant,
}

/// What a heartbeat asks.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerBeat<'a> {
    pub(crate) member_id: &'a str,
    pub(crate) epoch: i32,
    /// The subscription, when it is sent (at join, and when it changes).
    pub(crate) topics: Option<Vec<String>>,
    /// The partitions the member owns, when it says (at join, and when they change).
    pub(crate) owned: Option<Vec<TopicAssignment>>,
    /// How long it may take to revoke partitions, when it says (clients send it at join and
    /// -1, unchanged, afterwards).
    pub(crate) rebalance_timeout: Option<Duration>,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerBeatAnswer {
    /// The member's epoch from now on (-1 or -2 once it left).
    pub(crate) epoch: i32,
    /// The partitions the member may own now, when that changed (and at join).
    pub(crate) assignment: Option<Vec<TopicAssignment>>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct ConsumerMembership {
    members: Vec<Member>,
}

impl ConsumerMembership {
    /// True without members.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members now.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Each member's id, epoch and assignment.
    pub(crate) fn members(&self) -> impl Iterator<Item = (&str, i32, Vec<TopicAssignment>)> {
        self.members
            .iter()
            .map(|m| (m.id.as_str(), m.epoch, grouped(&m.assigned)))
    }

    /// A topic was deleted: its partitions leave every member at once, so that nothing read
    /// of it is committed to a topic created again under its name.
    pub(crate) fn forget_topic(&mut self, topic: &str) {
        for member in &mut self.members {
            member.assigned.retain(|(t, _)| t != topic);
            member.revoking.retain(|(t, _)| t != topic);
        }
    }

    /// Whether a member subscribes to `topic`.
    pub(crate) fn subscribes(&self, topic: &str) -> bool {
        self.members
            .iter()
            .any(|m| m.topics.iter().any(|t| t == topic))
    }

    /// Removes members whose session expired or who did not revoke in time; returns whether
    /// any was.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.members.len();
        self.members.retain(|m| {
            now.saturating_duration_since(m.last_seen) < SESSION_TIMEOUT
                && m.revoke_by.is_none_or(|by| now < by)
        });
        self.members.len() != before
    }

    /// A heartbeat; `partitions_of` gives a topic's partition count now (`None`: no such
    /// topic).
    pub(crate) fn beat(
        &mut self,
        beat: ConsumerBeat<'_>,
        now: Instant,
        members_max: usize,
        partitions_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<ConsumerBeatAnswer, Failure> {
        check_beat(beat.member_id, beat.topics.as_deref())?;
        self.expire(now);
        let found = self.members.iter().position(|m| m.id == beat.member_id);
        let index = match (beat.epoch, found) {
            (LEAVE_EPOCH | STATIC_LEAVE_EPOCH, found) => {
                if let Some(index) = found {
                    self.members.remove(index);
                }
                return Ok(ConsumerBeatAnswer {
                    epoch: beat.epoch,
                    assignment: None,
                });
            }
            (JOIN_EPOCH, Some(index)) => {
                // Joining again, the member has given up whatever it held.
                self.members[index].assigned.clear();
                self.members[index].revoking.clear();
                index
            }
            (JOIN_EPOCH, None) => {
                if beat.topics.is_none() {
                    return Err(invalid(
                        "a joining member names the topics it subscribes to".to_string(),
                    ));
                }
                if self.members.len() >= members_max {
                    return Err(Failure::new(
                        ErrorCode::GroupFull,
                        format!("the group already has {members_max} members"),
                    ));
                }
                self.members.push(Member {
                    id: beat.member_id.to_string(),
                    epoch: 0,
                    previous_epoch: 0,
                    topics: Vec::new(),
                    assigned: Partitions::new(),
                    revoking: Partitions::new(),
                    rebalance_timeout: REBALANCE_TIMEOUT_DEFAULT,
                    revoke_by: None,
                    last_seen: now,
                });
                self.members.len() - 1
            }
            (_, None) => {
                return Err(Failure::new(
                    ErrorCode::UnknownMember,
                    format!(
                        "member {:?} is not in the group: join again with epoch 0",
                        beat.member_id
                    ),
                ))
            }
            (epoch, Some(index)) => {
                // As Kafka: the epoch before is taken (the answer that gave the newest may be
                // lost) from a member that says what it owns, all of it within its assignment.
                let member = &self.members[index];
                let owned_within = beat
                    .owned
                    .as_ref()
                    .is_some_and(|owned| flat(owned).iter().all(|p| member.assigned.contains(p)));
                let accepted =
                    epoch == member.epoch || (epoch == member.previous_epoch && owned_within);
                if !accepted {
                    return Err(Failure::new(
                        ErrorCode::FencedMemberEpoch,
                        format!(
                            "epoch {epoch} is not the member's {}: join again with epoch 0",
                            member.epoch
                        ),
                    ));
                }
                index
            }
        };
        let rejoined = beat.epoch == JOIN_EPOCH;
        let member = &mut self.members[index];
        member.last_seen = now;
        if let Some(timeout) = beat.rebalance_timeout {
            member.rebalance_timeout = timeout.min(REBALANCE_TIMEOUT_MAX);
        }
        if let Some(topics) = beat.topics {
            member.topics = topics;
        }
        // What it says it owns releases what it was revoking and no longer lists; a claim
        // beyond what it was given counts for nothing.
        let owned = beat.owned.as_deref().map(flat);
        if let Some(owned) = &owned {
            member.revoking.retain(|p| owned.contains(p));
        }
        let mut answer = self.reconcile(index, rejoined, now, partitions_of);
        // A member whose view may differ from the assignment is told it in full: one on an
        // older epoch (the answer that moved it on was lost), or one listing other partitions.
        let member = &self.members[index];
        let view_differs =
            beat.epoch != member.epoch || owned.is_some_and(|owned| owned != member.assigned);
        if answer.assignment.is_none() && view_differs {
            answer.assignment = Some(grouped(&member.assigned));
        }
        Ok(answer)
    }

    /// Moves member `index` towards its target assignment (see the module docs).
    fn reconcile(
        &mut self,
        index: usize,
        rejoined: bool,
        now: Instant,
        partitions_of: impl Fn(&str) -> Option<u32>,
    ) -> ConsumerBeatAnswer {
        let target = self.target(index, partitions_of);
        let member = &self.members[index];
        let revoked: Partitions = member.assigned.difference(&target).cloned().collect();
        let (assigned, new_epoch) = if !revoked.is_empty() {
            // First the member gives up what it must; its epoch stays.
            let kept = member.assigned.intersection(&target).cloned().collect();
            (kept, false)
        } else if !member.revoking.is_empty() {
            // It has not yet said it gave up what it was told to revoke: wait for it.
            (member.assigned.clone(), false)
        } else {
            let free: Partitions = target
                .difference(&member.assigned)
                .filter(|p| !self.held_by_another(index, p))
                .cloned()
                .collect();
            let mut grown = member.assigned.clone();
            grown.extend(free);
            let changed = grown != member.assigned;
            (grown, changed)
        };
        let member = &mut self.members[index];
        member.revoking.extend(revoked);
        let still_revoking = !member.revoking.is_empty();
        member.revoke_by = if still_revoking {
            member.revoke_by.or(Some(now + member.rebalance_timeout))
        } else {
            None
        };
        let changed = assigned != member.assigned;
        member.assigned = assigned;
        if new_epoch || rejoined {
            member.previous_epoch = member.epoch;
            member.epoch = member.epoch.wrapping_add(1).max(1);
        }
        ConsumerBeatAnswer {
            epoch: member.epoch,
            assignment: (changed || new_epoch || rejoined).then(|| grouped(&member.assigned)),
        }
    }

    /// Member `index`'s share of the range assignment over every member.
    fn target(&self, index: usize, partitions_of: impl Fn(&str) -> Option<u32>) -> Partitions {
        let subscriptions: Vec<(&str, &[String])> = self
            .members
            .iter()
            .map(|m| (m.id.as_str(), m.topics.as_slice()))
            .collect();
        let mut all = assign_range(&subscriptions, partitions_of);
        flat(&std::mem::take(&mut all[index]))
    }

    /// Whether a member other than `index` was assigned `partition` or is revoking it.
    fn held_by_another(&self, index: usize, partition: &(String, u32)) -> bool {
        self.members.iter().enumerate().any(|(i, m)| {
            i != index && (m.assigned.contains(partition) || m.revoking.contains(partition))
        })
    }

    /// Checks that `member_id` may commit in `epoch` (its current or previous one).
    pub(crate) fn check_committer(
        &mut self,
        member_id: &str,
        epoch: i32,
        now: Instant,
    ) -> Result<(), Failure> {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.id == member_id)
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::UnknownMember,
                    format!("member {member_id:?} is not in the group"),
                )
            })?;
        if epoch != member.epoch && epoch != member.previous_epoch {
            return Err(Failure::new(
                ErrorCode::NotAssigned,
                format!("epoch {epoch} is not the member's {}", member.epoch),
            ));
        }
        member.last_seen = now;
        Ok(())
    }

    /// Whether `member_id` was assigned `topic`/`partition` or is revoking it.
    pub(crate) fn owns(&self, member_id: &str, topic: &str, partition: u32) -> bool {
        let key = (topic.to_string(), partition);
        self.members
            .iter()
            .any(|m| m.id == member_id && (m.assigned.contains(&key) || m.revoking.contains(&key)))
    }
}

fn flat(assignment: &[TopicAssignment]) -> Partitions {
    assignment
        .iter()
        .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic.clone(), *p)))
        .collect()
}

fn grouped(partitions: &Partitions) -> Vec<TopicAssignment> {
    let mut out: Vec<TopicAssignment> = Vec::new();
    for (topic, partition) in partitions {
        match out.last_mut() {
            Some((last, list)) if last == topic => list.push(*partition),
            _ => out.push((topic.clone(), vec![*partition])),
        }
    }
    out
}

/// Checks what a heartbeat of either kind (consumer protocol, share group) brings to keep: a
/// member id its client made, of 1 to 255 bytes, and at most 1,000 subscribed topics.
pub(crate) fn check_beat(member_id: &str, topics: Option<&[String]>) -> Result<(), Failure> {
    if member_id.is_empty() || member_id.len() > MEMBER_ID_BYTES_MAX {
        return Err(invalid(format!(
            "a member id has 1 to {MEMBER_ID_BYTES_MAX} bytes (the client makes it)"
        )));
    }
    if topics.is_some_and(|t| t.len() > SUBSCRIBED_TOPICS_MAX) {
        return Err(invalid(format!(
            "a member subscribes to at most {SUBSCRIBED_TOPICS_MAX} topics"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> Failure {
    Failure::new(ErrorCode::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn beat<'a>(id: &'a str, epoch: i32, owned: Option<&[u32]>) -> ConsumerBeat<'a> {
        ConsumerBeat {
            member_id: id,
            epoch,
            topics: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: owned.map(|p| vec![("t".to_string(), p.to_vec())]),
            // Sent at join only, as clients do.
            rebalance_timeout: (epoch == 0).then_some(TIMEOUT),
        }
    }

    fn partitions(answer: &ConsumerBeatAnswer) -> Vec<u32> {
        answer
            .assignment
            .as_ref()
            .expect("an assignment")
            .iter()
            .flat_map(|(_, p)| p.clone())
            .collect()
    }

    #[test]
    fn a_partition_moves_only_once_its_owner_revoked_it() {
        let now = Instant::now();
        let mut group = ConsumerMembership::default();
        let four = |_: &str| Some(4);
        let a = group.beat(beat("a", 0, None), now, 10, four).unwrap();
        assert_eq!((a.epoch, partitions(&a)), (1, vec![0, 1, 2, 3]));
        // b joins: nothing is free yet.
        let b = group.beat(beat("b", 0, None), now, 10, four).unwrap();
        assert_eq!((b.epoch, partitions(&b)), (1, vec![]));
        // a is told to give up 2 and 3, under the same epoch.
        let a = group
            .beat(beat("a", 1, Some(&[0, 1, 2, 3])), now, 10, four)
            .unwrap();
        assert_eq!((a.epoch, partitions(&a)), (1, vec![0, 1]));
        // b still gets nothing while a owns them.
        let b = group.beat(beat("b", 1, Some(&[])), now, 10, four).unwrap();
        assert_eq!(b.assignment, None);
        assert!(!group.owns("b", "t", 2));
        assert!(group.owns("a", "t", 2), "a may commit what it revokes");
        // a revoked them (its heartbeat says so): b gets them under a new epoch.
        let a = group
            .beat(beat("a", 1, Some(&[0, 1])), now, 10, four)
            .unwrap();
        assert_eq!(a.assignment, None);
        let b = group.beat(beat("b", 1, Some(&[])), now, 10, four).unwrap();
        assert_eq!((b.epoch, partitions(&b)), (2, vec![2, 3]));
        // Commits: current or previous epoch, partitions owned.
        assert!(group.check_committer("b", 2, now).is_ok());
        assert!(group.check_committer("b", 1, now).is_ok());
        assert_eq!(
            group.check_committer("b", 5, now).unwrap_err().code,
            ErrorCode::NotAssigned
        );
        // Wrong epochs are fenced; an unknown member is unknown.
        let fenced = group.beat(beat("b", 7, None), now, 10, four).unwrap_err();
        assert_eq!(fenced.code, ErrorCode::FencedMemberEpoch);
        let ghost = group.beat(beat("c", 3, None), now, 10, four).unwrap_err();
        assert_eq!(ghost.code, ErrorCode::UnknownMember);
        // b leaves: a gets everything back.
        let left = group.beat(beat("b", -1, None), now, 10, four).unwrap();
        assert_eq!(left.epoch, -1);
        let a = group
            .beat(beat("a", 1, Some(&[0, 1])), now, 10, four)
            .unwrap();
        assert_eq!((a.epoch, partitions(&a)), (2, vec![0, 1, 2, 3]));
    }

    #[test]
    fn members_that_go_silent_or_do_not_revoke_are_removed() {
        let now = Instant::now();
        let mut group = ConsumerMembership::default();
        let two = |_: &str| Some(2);
        group.beat(beat("a", 0, None), now, 10, two).unwrap();
        group.beat(beat("b", 0, None), now, 10, two).unwrap();
        // a is told to revoke 1 and never does: past its rebalance timeout it goes.
        let a = group
            .beat(beat("a", 1, Some(&[0, 1])), now, 10, two)
            .unwrap();
        assert_eq!(partitions(&a), [0]);
        assert!(!group.expire(now + TIMEOUT / 2));
        assert!(group.expire(now + TIMEOUT));
        assert_eq!(group.members().count(), 1);
        let b = group
            .beat(beat("b", 1, Some(&[])), now + TIMEOUT, 10, two)
            .unwrap();
        assert_eq!(partitions(&b), [0, 1]);
        // b goes silent.
        assert!(group.expire(now + TIMEOUT + SESSION_TIMEOUT));
        assert!(group.is_empty());
    }

    /// A heartbeat as clients send them after joining: no rebalance timeout, maybe no owned
    /// partitions.
    fn plain<'a>(id: &'a str, epoch: i32, owned: Option<&[u32]>) -> ConsumerBeat<'a> {
        ConsumerBeat {
            rebalance_timeout: None,
            ..beat(id, epoch, owned)
        }
    }

    #[test]
    fn heartbeats_without_a_rebalance_timeout_keep_the_joins() {
        let now = Instant::now();
        let mut group = ConsumerMembership::default();
        let four = |_: &str| Some(4);
        group.beat(beat("a", 0, None), now, 10, four).unwrap();
        group.beat(beat("b", 0, None), now, 10, four).unwrap();
        // a learns it must revoke 2 and 3; it has the join's 10 s to do it, not none.
        let a = group.beat(plain("a", 1, None), now, 10, four).unwrap();
        assert_eq!(partitions(&a), [0, 1]);
        assert!(!group.expire(now + TIMEOUT / 2));
        // It has not said it gave them up (no owned partitions sent): b waits.
        let b = group.beat(plain("b", 1, None), now, 10, four).unwrap();
        assert_eq!(b.assignment, None);
        assert!(group.owns("a", "t", 3));
    }

    /// A topic's partition count, as the tests give it.
    type PartitionsOf = fn(&str) -> Option<u32>;

    /// a (epoch 1) gave up partitions 2 and 3 of topic t (4 partitions) for b (epoch 1, not
    /// yet given them).
    fn a_revoked_half_for_b() -> (ConsumerMembership, Instant, PartitionsOf) {
        let now = Instant::now();
        let mut group = ConsumerMembership::default();
        let four: PartitionsOf = |_| Some(4);
        group.beat(beat("a", 0, None), now, 10, four).unwrap();
        group.beat(beat("b", 0, None), now, 10, four).unwrap();
        group
            .beat(plain("a", 1, Some(&[0, 1, 2, 3])), now, 10, four)
            .unwrap();
        group
            .beat(plain("a", 1, Some(&[0, 1])), now, 10, four)
            .unwrap();
        (group, now, four)
    }

    #[test]
    fn a_member_on_the_epoch_before_is_told_its_whole_assignment() {
        let (mut group, now, four) = a_revoked_half_for_b();
        group.beat(plain("b", -1, None), now, 10, four).unwrap();
        // a grows to all four under epoch 2, and that answer is lost.
        let grown = group
            .beat(plain("a", 1, Some(&[0, 1])), now, 10, four)
            .unwrap();
        assert_eq!((grown.epoch, partitions(&grown)), (2, vec![0, 1, 2, 3]));
        // Its retry on epoch 1 gets all of it again, under epoch 2.
        let retry = group
            .beat(plain("a", 1, Some(&[0, 1])), now, 10, four)
            .unwrap();
        assert_eq!((retry.epoch, partitions(&retry)), (2, vec![0, 1, 2, 3]));
        // The epoch before without owned partitions is fenced, as by Kafka.
        let blind = group.beat(plain("a", 1, None), now, 10, four).unwrap_err();
        assert_eq!(blind.code, ErrorCode::FencedMemberEpoch);
    }

    #[test]
    fn claiming_partitions_one_was_not_given_takes_nothing() {
        let (mut group, now, four) = a_revoked_half_for_b();
        let b = group.beat(plain("b", 1, Some(&[])), now, 10, four).unwrap();
        assert_eq!(partitions(&b), [2, 3]);
        // a claims b's partitions: nothing changes, a is told its own, and may not commit b's.
        let a = group
            .beat(plain("a", 1, Some(&[0, 1, 2, 3])), now, 10, four)
            .unwrap();
        assert_eq!((a.epoch, partitions(&a)), (1, vec![0, 1]));
        assert!(!group.owns("a", "t", 2));
        assert!(group.owns("b", "t", 2));
    }
}
