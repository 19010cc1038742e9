//! Members of a share group that keep their membership with heartbeats (Kafka's share
//! consumers, KIP-932's ShareGroupHeartbeat), on the group's coordinator.
//!
//! Native share consumers need no membership: any member may fetch any partition, and a
//! partition's window remembers who holds what. Kafka's share consumers fetch only what the
//! coordinator assigns them, so the coordinator tells each member its partitions. Records
//! are leased one by one, so any number of members may read a partition at once: every
//! member is assigned every partition of the topics it subscribes to (the simplest assignment
//! KIP-932's assignors may make), and its epoch goes up whenever that set changes, so that
//! the member learns the new one.
//!
//! A member joins with epoch 0 and a client-chosen member id, heartbeats with the epoch it
//! was given, and leaves with epoch -1 or when no heartbeat arrived for the session timeout.
//! Pure state: time is passed in, the coordinator computes assignments.

use std::time::{Duration, Instant};

use ringlog_engine::topic::TopicId;

use super::consumer_membership::check_beat;
use crate::error_code::ErrorCode;
use crate::server::message::Failure;

/// Time without a heartbeat after which a member is removed (Kafka's
/// `group.share.session.timeout.ms` default).
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// How often members are asked to heartbeat (Kafka's `group.share.heartbeat.interval.ms`).
pub(crate) const HEARTBEAT_INTERVAL_MS: i32 = 5_000;

/// Epoch a member sends to join, and to leave.
pub(crate) const JOIN_EPOCH: i32 = 0;
pub(crate) const LEAVE_EPOCH: i32 = -1;

/// A member's assignment: each topic's id with its partitions, in topic order.
pub(crate) type ShareAssignment = Vec<(TopicId, Vec<u32>)>;

#[derive(Debug)]
struct ShareMember {
    id: String,
    epoch: i32,
    topics: Vec<String>,
    assignment: ShareAssignment,
    last_seen: Instant,
}

/// What a heartbeat asks.
#[derive(Debug, Clone)]
pub(crate) struct ShareBeat<'a> {
    pub(crate) member_id: &'a str,
    pub(crate) epoch: i32,
    /// The subscription, when it is sent (at join, and when it changes).
    pub(crate) topics: Option<Vec<String>>,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareBeatAnswer {
    /// The member's epoch from now on (-1 once it left).
    pub(crate) epoch: i32,
    /// The member's partitions, when they changed (and at join).
    pub(crate) assignment: Option<ShareAssignment>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct ShareMembership {
    members: Vec<ShareMember>,
}

impl ShareMembership {
    /// Members now (after [`Self::expire`]).
    pub(crate) fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.id.as_str())
    }

    /// Each member's id, epoch, subscribed topics and last assignment.
    pub(crate) fn members(
        &self,
    ) -> impl Iterator<Item = (&str, i32, &[String], &ShareAssignment)> + '_ {
        self.members
            .iter()
            .map(|m| (m.id.as_str(), m.epoch, m.topics.as_slice(), &m.assignment))
    }

    /// Removes members whose session expired.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.members
            .retain(|m| now.saturating_duration_since(m.last_seen) < SESSION_TIMEOUT);
    }

    /// A heartbeat; `assign` gives the partitions of a subscription as it stands now.
    pub(crate) fn beat(
        &mut self,
        beat: ShareBeat<'_>,
        now: Instant,
        members_max: usize,
        assign: impl Fn(&[String]) -> ShareAssignment,
    ) -> Result<ShareBeatAnswer, Failure> {
        check_beat(beat.member_id, beat.topics.as_deref())?;
        self.expire(now);
        let index = self.members.iter().position(|m| m.id == beat.member_id);
        match (beat.epoch, index) {
            (LEAVE_EPOCH, index) => {
                if let Some(index) = index {
                    self.members.remove(index);
                }
                Ok(ShareBeatAnswer {
                    epoch: LEAVE_EPOCH,
                    assignment: None,
                })
            }
            (JOIN_EPOCH, index) => {
                let Some(topics) = beat.topics else {
                    return Err(invalid(
                        "a joining member names the topics it subscribes to".to_string(),
                    ));
                };
                let index = match index {
                    Some(index) => index,
                    None if self.members.len() >= members_max => {
                        return Err(Failure::new(
                            ErrorCode::GroupFull,
                            format!("the group already has {members_max} members"),
                        ))
                    }
                    None => {
                        self.members.push(ShareMember {
                            id: beat.member_id.to_string(),
                            epoch: 0,
                            topics: Vec::new(),
                            assignment: Vec::new(),
                            last_seen: now,
                        });
                        self.members.len() - 1
                    }
                };
                let member = &mut self.members[index];
                member.topics = topics;
                member.assignment = assign(&member.topics);
                member.epoch = member.epoch.wrapping_add(1).max(1);
                member.last_seen = now;
                Ok(ShareBeatAnswer {
                    epoch: member.epoch,
                    assignment: Some(member.assignment.clone()),
                })
            }
            (_, None) => Err(Failure::new(
                ErrorCode::UnknownMember,
                format!(
                    "member {:?} is not in the group: join again with epoch 0",
                    beat.member_id
                ),
            )),
            (epoch, Some(index)) => {
                let member = &mut self.members[index];
                if epoch != member.epoch {
                    return Err(Failure::new(
                        ErrorCode::FencedMemberEpoch,
                        format!(
                            "epoch {epoch} is not the member's {}: join again with epoch 0",
                            member.epoch
                        ),
                    ));
                }
                member.last_seen = now;
                if let Some(topics) = beat.topics {
                    member.topics = topics;
                }
                let assignment = assign(&member.topics);
                if assignment == member.assignment {
                    return Ok(ShareBeatAnswer {
                        epoch: member.epoch,
                        assignment: None,
                    });
                }
                member.assignment = assignment;
                member.epoch = member.epoch.wrapping_add(1).max(1);
                Ok(ShareBeatAnswer {
                    epoch: member.epoch,
                    assignment: Some(member.assignment.clone()),
                })
            }
        }
    }
}

fn invalid(message: String) -> Failure {
    Failure::new(ErrorCode::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(topics: &[String]) -> ShareAssignment {
        topics
            .iter()
            .map(|t| (TopicId(t.len() as u128), vec![0, 1]))
            .collect()
    }

    fn beat<'a>(member_id: &'a str, epoch: i32, topics: Option<&[&str]>) -> ShareBeat<'a> {
        ShareBeat {
            member_id,
            epoch,
            topics: topics.map(|t| t.iter().map(|t| t.to_string()).collect()),
        }
    }

    #[test]
    fn members_join_heartbeat_learn_changes_and_leave() {
        let now = Instant::now();
        let mut group = ShareMembership::default();
        let joined = group
            .beat(beat("a", 0, Some(&["t"])), now, 10, assign)
            .unwrap();
        assert_eq!(joined.epoch, 1);
        assert_eq!(joined.assignment, Some(vec![(TopicId(1), vec![0, 1])]));
        // Unchanged: no assignment sent, same epoch.
        let same = group.beat(beat("a", 1, None), now, 10, assign).unwrap();
        assert_eq!((same.epoch, same.assignment), (1, None));
        // A new subscription: a new epoch and assignment.
        let grown = group
            .beat(beat("a", 1, Some(&["t", "uu"])), now, 10, assign)
            .unwrap();
        assert_eq!(grown.epoch, 2);
        assert_eq!(grown.assignment.unwrap().len(), 2);
        let stale = group.beat(beat("a", 1, None), now, 10, assign).unwrap_err();
        assert_eq!(stale.code, ErrorCode::FencedMemberEpoch);
        let ghost = group.beat(beat("b", 3, None), now, 10, assign).unwrap_err();
        assert_eq!(ghost.code, ErrorCode::UnknownMember);
        let left = group.beat(beat("a", -1, None), now, 10, assign).unwrap();
        assert_eq!(left.epoch, -1);
        assert_eq!(group.member_ids().count(), 0);
    }

    #[test]
    fn silent_members_expire_and_the_group_is_bounded() {
        let now = Instant::now();
        let mut group = ShareMembership::default();
        group
            .beat(beat("a", 0, Some(&["t"])), now, 1, assign)
            .unwrap();
        let full = group
            .beat(beat("b", 0, Some(&["t"])), now, 1, assign)
            .unwrap_err();
        assert_eq!(full.code, ErrorCode::GroupFull);
        let later = now + SESSION_TIMEOUT;
        group
            .beat(beat("b", 0, Some(&["t"])), later, 1, assign)
            .unwrap();
        assert_eq!(group.member_ids().collect::<Vec<_>>(), ["b"]);
        let joining = group
            .beat(beat("c", 0, None), later, 2, assign)
            .unwrap_err();
        assert_eq!(joining.code, ErrorCode::InvalidRequest);
    }
}
