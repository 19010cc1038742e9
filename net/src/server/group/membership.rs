//! Membership of one consumer group: members, generations and the rebalance protocol.
//!
//! Protocol (the coordinator computes assignments itself, so one round trip suffices):
//! - A JoinGroup (new member, or a known member rejoining) moves a Stable or Empty group to
//!   PreparingRebalance. Every other member learns it from its next Heartbeat
//!   (RebalanceInProgress) and sends JoinGroup again. JoinGroup calls wait.
//! - The rebalance completes when every member has rejoined, or at the rebalance deadline (the
//!   longest `rebalance_timeout_ms` of the members) after dropping those that did not. The
//!   generation goes up by one, the range assignor splits the partitions, the group is Stable
//!   and every waiting JoinGroup is answered with its member's assignment.
//! - A member whose heartbeats stop for `session_timeout_ms` is removed, as is one that sends
//!   LeaveGroup; the others rebalance. With no members left the group is Empty.
//! - A static member (KIP-345: Kafka's `group.instance.id`) is known by an instance id its
//!   client keeps across restarts. A JoinGroup without a member id naming a known instance
//!   takes that member's place under a new member id, and the old id is fenced (every request
//!   naming the instance with it is refused); in a Stable group whose subscription the joiner
//!   keeps, it takes over the member's assignment without a rebalance, so a consumer restarted
//!   within its session timeout moves no partition. Static members leave only when asked to
//!   (their clients do not on close) or when their session expires.
//! - Commits are accepted from members of the current generation for partitions they were
//!   assigned in it; a member may commit during PreparingRebalance (before it rejoins) so its
//!   progress is not lost. A deleted topic's partitions leave every assignment at once: what
//!   a member read of it must not be committed to a topic created again under its name.
//!
//! - In a group of cooperative members (KIP-429: Kafka's `cooperative-sticky`), members keep
//!   their partitions while they rejoin and give up those they lose only once the rebalance is
//!   over. A partition moving to another member is then given to nobody in that generation:
//!   its old owner revokes it and rejoins, and the next rebalance gives it to the new one, as
//!   Kafka's cooperative assignor does, so no partition is read by two members at once. Until
//!   then the old owner may still commit it (it commits what it gives up as it revokes).
//!
//! Pure state: time is passed in, nothing waits; the coordinator drives it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::assignor::{assign_range, TopicAssignment};
use crate::error_code::ErrorCode;
use crate::message::group::GroupState;
use crate::server::message::Failure;

/// Assignor protocols of incremental cooperative rebalancing (KIP-429).
pub(crate) const COOPERATIVE_PROTOCOLS: &[&str] = &["cooperative-sticky"];

/// Whether members of `protocol` keep their partitions while they rejoin.
pub(crate) fn is_cooperative(protocol: &str) -> bool {
    COOPERATIVE_PROTOCOLS.contains(&protocol)
}

/// How a commit or heartbeat naming a generation other than the group's is refused: the two
/// protocols tell their clients different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaleGeneration {
    /// `RebalanceInProgress`: the native protocol's "join again, then commit" (PROTOCOL.md).
    RebalanceInProgress,
    /// `NotAssigned` (what the member holds is not its assignment), which the Kafka door
    /// answers ILLEGAL_GENERATION, as Kafka's classic coordinator does.
    IllegalGeneration,
}

impl StaleGeneration {
    fn code(self) -> ErrorCode {
        match self {
            StaleGeneration::RebalanceInProgress => ErrorCode::RebalanceInProgress,
            StaleGeneration::IllegalGeneration => ErrorCode::NotAssigned,
        }
    }
}

/// Whom a heartbeat, commit or leave speaks for: a member id and, from a static member, its
/// instance id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemberRef {
    /// Server-given member id (may be empty in a LeaveGroup naming an instance).
    pub(crate) member_id: String,
    /// Client-given instance id of a static member (KIP-345).
    pub(crate) instance_id: Option<String>,
}

impl MemberRef {
    /// A dynamic member, known by its member id alone.
    pub(crate) fn dynamic(member_id: impl Into<String>) -> Self {
        MemberRef {
            member_id: member_id.into(),
            instance_id: None,
        }
    }
}

/// One member.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Server-given id.
    pub(crate) id: String,
    /// Client-given instance id of a static member, kept across the client's restarts.
    pub(crate) instance_id: Option<String>,
    /// Client-given id, shown by DescribeGroup.
    pub(crate) client_id: String,
    /// Subscribed topics.
    pub(crate) topics: Vec<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    /// Rejoined during the current rebalance.
    joined: bool,
    /// A JoinGroup call of this member is waiting for the rebalance to complete.
    awaiting_join: bool,
    /// Generation whose assignment the member holds, -1 for none.
    generation: i32,
    /// Partitions assigned in `generation`.
    pub(crate) assignment: Vec<TopicAssignment>,
    /// Cooperative groups: partitions held in the generation before `generation` that the
    /// member gives up in this one (assigned to no one meanwhile). It may still commit them.
    revoking: Vec<TopicAssignment>,
    /// The member keeps its partitions while it rejoins (a cooperative protocol).
    cooperative: bool,
    /// The assignor protocols a Kafka member offered at its last join (empty for native
    /// members, which take the server's assignment whatever the others offer).
    protocols: Vec<String>,
}

/// What a JoinGroup asks.
#[derive(Debug, Clone)]
pub(crate) struct Join<'a> {
    /// Known member id, or empty for a new member (or a static member starting again).
    pub(crate) member_id: &'a str,
    /// Instance id of a static member.
    pub(crate) instance_id: Option<&'a str>,
    /// Id to give a new member.
    pub(crate) new_member_id: String,
    /// Client-given id.
    pub(crate) client_id: &'a str,
    /// Subscribed topics.
    pub(crate) topics: Vec<String>,
    /// Heartbeat deadline.
    pub(crate) session_timeout: Duration,
    /// How long a rebalance waits for this member.
    pub(crate) rebalance_timeout: Duration,
    /// The member rebalances cooperatively (its protocol is one of [`COOPERATIVE_PROTOCOLS`]).
    pub(crate) cooperative: bool,
    /// Every assignor protocol a Kafka member offers (empty for native members).
    pub(crate) protocols: Vec<String>,
}

/// Where a waiting JoinGroup stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    /// The rebalance is still running.
    Pending,
    /// Stable: the member's generation and assignment.
    Assigned {
        /// Generation.
        generation: i32,
        /// Partitions.
        assignment: Vec<TopicAssignment>,
    },
    /// The member was removed (it left, or timed out).
    Removed,
}

/// Membership of one consumer group; see the module docs.
#[derive(Debug)]
pub(crate) struct Membership {
    generation: i32,
    state: GroupState,
    members: Vec<Member>,
    rebalance_deadline: Option<Instant>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            generation: 0,
            state: GroupState::Empty,
            members: Vec::new(),
            rebalance_deadline: None,
        }
    }
}

impl Membership {
    /// Current state.
    pub(crate) fn state(&self) -> GroupState {
        self.state
    }

    /// Current generation.
    pub(crate) fn generation(&self) -> i32 {
        self.generation
    }

    /// Current members.
    pub(crate) fn members(&self) -> &[Member] {
        &self.members
    }

    /// Whether the group rebalances cooperatively: every member keeps its partitions while it
    /// rejoins. A member of an eager protocol gave its partitions up before rejoining, so one
    /// of them makes the group eager: withheld from it, a partition its rejoin already freed
    /// would wait for a rebalance nobody starts. Members share a protocol (see
    /// [`Membership::supports_protocols`]), but each uses the one it chose, an eager one when
    /// it offers one, where Kafka's members all use one: a member offering `range` beside
    /// `cooperative-sticky` meets one offering only the latter, and the group moves
    /// partitions in one step.
    fn rebalances_cooperatively(&self) -> bool {
        !self.members.is_empty() && self.members.iter().all(|member| member.cooperative)
    }

    /// Whether a member offering `protocols` may join: as in Kafka's classic coordinator, at
    /// least one of them must be offered by every member (the joiner itself, when it rejoins,
    /// with what it offered before), so that the group has an assignor all its members
    /// speak. Native members offer none and accept whatever the server assigns, so they
    /// neither constrain Kafka members nor are refused.
    fn supports_protocols(&self, protocols: &[String]) -> bool {
        // Members that speak Kafka's protocols: a fresh iterator each time, since a join
        // must not allocate per member.
        let speakers = || {
            self.members
                .iter()
                .filter(|member| !member.protocols.is_empty())
        };
        protocols.is_empty()
            || speakers().next().is_none()
            || protocols
                .iter()
                .any(|protocol| speakers().all(|member| member.protocols.contains(protocol)))
    }

    /// True without members.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn find_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == member_id)
    }

    fn find(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == member_id)
    }

    /// Registers a join and starts a rebalance if none is running (or, for a static member
    /// taking its own place in a Stable group, keeps the group as it is); returns the member
    /// id. Call [`Membership::try_complete`] afterwards, then wait for
    /// [`Membership::outcome`].
    pub(crate) fn join(
        &mut self,
        join: Join<'_>,
        now: Instant,
        members_max: usize,
    ) -> Result<String, Failure> {
        let known_instance = join.instance_id.and_then(|id| self.static_index(id));
        let is_new = join.member_id.is_empty() && known_instance.is_none();
        if is_new && self.members.len() >= members_max {
            return Err(Failure::new(
                ErrorCode::GroupFull,
                format!("the group already has {members_max} members, the most allowed"),
            ));
        }
        // Kafka's order: the group's size, then the protocols, then whether a known member
        // id is one of the group's (a static member's first, for its instance).
        if !self.supports_protocols(&join.protocols) {
            return Err(Failure::new(
                ErrorCode::InvalidGroupKind,
                format!(
                    "none of the protocols {:?} is offered by every member of the group",
                    join.protocols
                ),
            ));
        }
        let (index, rebalance) = match (join.member_id.is_empty(), known_instance) {
            (true, Some(index)) => {
                // The instance started again: its new id takes the old one's place, which
                // is fenced from now on.
                let rebalance = !self.keeps_assignment(index, &join);
                self.members[index].id = join.new_member_id.clone();
                (index, rebalance)
            }
            (true, None) => {
                self.members.push(Member {
                    id: join.new_member_id.clone(),
                    instance_id: join.instance_id.map(str::to_string),
                    client_id: String::new(),
                    topics: Vec::new(),
                    session_timeout: join.session_timeout,
                    rebalance_timeout: join.rebalance_timeout,
                    last_seen: now,
                    joined: false,
                    awaiting_join: false,
                    generation: -1,
                    assignment: Vec::new(),
                    revoking: Vec::new(),
                    cooperative: join.cooperative,
                    protocols: Vec::new(),
                });
                (self.members.len() - 1, true)
            }
            (false, _) => {
                let member = MemberRef {
                    member_id: join.member_id.to_string(),
                    instance_id: join.instance_id.map(str::to_string),
                };
                (self.resolve(&member)?, true)
            }
        };
        if rebalance && self.state != GroupState::PreparingRebalance {
            self.begin_rebalance(now);
        }
        let member = &mut self.members[index];
        member.client_id = join.client_id.to_string();
        member.topics = join.topics;
        member.session_timeout = join.session_timeout;
        member.rebalance_timeout = join.rebalance_timeout;
        member.cooperative = join.cooperative;
        member.protocols = join.protocols;
        member.last_seen = now;
        member.joined = rebalance;
        member.awaiting_join = true;
        let member_id = member.id.clone();
        if rebalance {
            // A member joining late in a rebalance may extend it up to its own timeout.
            let deadline = now + member.rebalance_timeout;
            if self.rebalance_deadline.is_none_or(|d| d < deadline) {
                self.rebalance_deadline = Some(deadline);
            }
        }
        Ok(member_id)
    }

    /// Whether the static member at `index`, starting again with `join`, takes over its
    /// assignment as it is: the group is Stable, the member holds the current generation, and
    /// it subscribes to the same topics with the same kind of protocol. Anything else is a
    /// change the next assignment must reflect.
    fn keeps_assignment(&self, index: usize, join: &Join<'_>) -> bool {
        let member = &self.members[index];
        let same_topics = member.topics.len() == join.topics.len()
            && join
                .topics
                .iter()
                .all(|topic| member.topics.contains(topic));
        self.state == GroupState::Stable
            && member.generation == self.generation
            && member.cooperative == join.cooperative
            && same_topics
    }

    /// The static member of `instance_id`.
    fn static_index(&self, instance_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    /// The member a request speaks for, in the order of Kafka's classic coordinator: an
    /// instance the group knows under another member id is fenced, then a member id the group
    /// lacks is unknown.
    fn resolve(&self, member: &MemberRef) -> Result<usize, Failure> {
        if let Some(instance_id) = member.instance_id.as_deref() {
            if let Some(index) = self.static_index(instance_id) {
                if self.members[index].id != member.member_id {
                    return Err(fenced(instance_id, &member.member_id));
                }
                return Ok(index);
            }
        }
        self.members
            .iter()
            .position(|m| m.id == member.member_id)
            .ok_or_else(|| unknown_member(&member.member_id))
    }

    /// Whether `member_id` lost its place to a newer member of the same `instance_id`: a
    /// JoinGroup of it still waiting is answered as fenced rather than removed.
    pub(crate) fn is_fenced(&self, instance_id: &str, member_id: &str) -> bool {
        self.static_index(instance_id)
            .is_some_and(|index| self.members[index].id != member_id)
    }

    /// The waiting JoinGroup of `member_id` returned (answered, failed or cancelled).
    pub(crate) fn join_finished(&mut self, member_id: &str, now: Instant) {
        if let Some(member) = self.find_mut(member_id) {
            member.awaiting_join = false;
            // Its session restarts from the answer, not from the join that waited.
            member.last_seen = now;
        }
    }

    /// Starts a rebalance when a member subscribes to `topic` and the group is stable (the
    /// topic was created, deleted or gained partitions, which the next assignment reflects);
    /// returns whether it did. A rebalance already under way assigns from the catalog as it
    /// is when it completes, so it needs no new one.
    pub(crate) fn rebalance_for_topic(&mut self, topic: &str, now: Instant) -> bool {
        let reads_topic = self
            .members
            .iter()
            .any(|member| member.topics.iter().any(|t| t == topic));
        if self.state != GroupState::Stable || !reads_topic {
            return false;
        }
        self.begin_rebalance(now);
        true
    }

    /// Takes the partitions of deleted topic `topic` from every member's assignment, so that
    /// no member commits what it read of it to a topic created again under the same name
    /// (commits are checked against the assignment); returns whether any member had some.
    pub(crate) fn revoke_topic(&mut self, topic: &str) -> bool {
        let mut revoked = false;
        for member in &mut self.members {
            let before = member.assignment.len();
            member.assignment.retain(|(t, _)| t != topic);
            member.revoking.retain(|(t, _)| t != topic);
            revoked |= member.assignment.len() != before;
        }
        revoked
    }

    fn begin_rebalance(&mut self, now: Instant) {
        self.state = GroupState::PreparingRebalance;
        let longest = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.rebalance_deadline = Some(now + longest);
        for member in &mut self.members {
            // A member still waiting in JoinGroup will take the new generation's answer.
            member.joined = member.awaiting_join;
        }
    }

    /// Completes the rebalance if every member rejoined or the deadline passed; returns
    /// whether anything changed (waiters must look again).
    pub(crate) fn try_complete(
        &mut self,
        now: Instant,
        partitions_of: impl Fn(&str) -> Option<u32>,
    ) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_joined = self.members.iter().all(|m| m.joined);
        let overdue = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !all_joined && !overdue {
            return false;
        }
        self.members.retain(|m| m.joined);
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            return true;
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        let subscriptions: Vec<(&str, &[String])> = self
            .members
            .iter()
            .map(|m| (m.id.as_str(), m.topics.as_slice()))
            .collect();
        let mut assignments = assign_range(&subscriptions, partitions_of);
        let cooperative = self.rebalances_cooperatively();
        if cooperative {
            self.withhold_owned(&mut assignments);
        }
        for (member, assignment) in self.members.iter_mut().zip(assignments) {
            member.revoking = if cooperative {
                given_up(&member.assignment, &assignment)
            } else {
                Vec::new()
            };
            member.assignment = assignment;
            member.generation = self.generation;
            member.joined = false;
        }
        self.state = GroupState::Stable;
        true
    }

    /// Takes out of each new assignment (one per member, in member order) the partitions
    /// another member still holds from its last assignment: cooperative members keep those
    /// until they learn the new assignment, then revoke them and rejoin, and the next
    /// rebalance hands them over.
    fn withhold_owned(&self, assignments: &mut [Vec<TopicAssignment>]) {
        // By topic and partition, the member holding it: a scan of every member per partition
        // would make a rebalance quadratic in the partitions on the shard thread.
        let mut holders: HashMap<(&str, u32), usize> = HashMap::new();
        for (index, member) in self.members.iter().enumerate() {
            for (topic, partitions) in &member.assignment {
                for &partition in partitions {
                    holders.insert((topic.as_str(), partition), index);
                }
            }
        }
        for (index, assignment) in assignments.iter_mut().enumerate() {
            for (topic, partitions) in assignment.iter_mut() {
                partitions.retain(|&partition| {
                    holders
                        .get(&(topic.as_str(), partition))
                        .is_none_or(|&holder| holder == index)
                });
            }
            assignment.retain(|(_, partitions)| !partitions.is_empty());
        }
    }

    /// Where the JoinGroup of `member_id` stands.
    pub(crate) fn outcome(&self, member_id: &str) -> JoinOutcome {
        match self.find(member_id) {
            None => JoinOutcome::Removed,
            Some(member)
                if self.state == GroupState::Stable && member.generation == self.generation =>
            {
                JoinOutcome::Assigned {
                    generation: self.generation,
                    assignment: member.assignment.clone(),
                }
            }
            Some(_) => JoinOutcome::Pending,
        }
    }

    /// A heartbeat: Ok while the member holds the current generation of a Stable group. As in
    /// Kafka's classic coordinator, a fenced instance or a member the group lacks comes first,
    /// then a generation other than the group's (answered as `stale` says), then a rebalance
    /// under way.
    pub(crate) fn heartbeat(
        &mut self,
        member: &MemberRef,
        generation: i32,
        stale: StaleGeneration,
        now: Instant,
    ) -> Result<(), Failure> {
        let state = self.state;
        let current = self.generation;
        let index = self.resolve(member)?;
        let member = &mut self.members[index];
        member.last_seen = now;
        if generation != current {
            return Err(Failure::new(
                stale.code(),
                format!("generation {generation} is not the group's current {current}: join again"),
            ));
        }
        if state != GroupState::Stable || member.generation != current {
            return Err(Failure::new(
                ErrorCode::RebalanceInProgress,
                "the group is rebalancing: join again",
            ));
        }
        Ok(())
    }

    /// Removes a member at its request, or a static member named by its instance alone (an
    /// admin's removal: Kafka's `removeMembersFromConsumerGroup`).
    pub(crate) fn leave(&mut self, member: &MemberRef, now: Instant) -> Result<(), Failure> {
        let index = match member.instance_id.as_deref() {
            Some(instance_id) if member.member_id.is_empty() => self
                .static_index(instance_id)
                .ok_or_else(|| unknown_instance(instance_id))?,
            _ => self.resolve(member)?,
        };
        self.members.remove(index);
        self.after_removal(now);
        Ok(())
    }

    /// Removes members whose session expired; returns whether any was.
    pub(crate) fn expire_sessions(&mut self, now: Instant) -> bool {
        let before = self.members.len();
        self.members.retain(|m| {
            m.awaiting_join || now.saturating_duration_since(m.last_seen) < m.session_timeout
        });
        if self.members.len() == before {
            return false;
        }
        self.after_removal(now);
        true
    }

    fn after_removal(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.rebalance_deadline = None;
        } else if self.state != GroupState::PreparingRebalance {
            self.begin_rebalance(now);
        }
    }

    /// Checks that `member` may commit in `generation` (top-level errors), in the order of
    /// Kafka's classic coordinator: a fenced instance or a member the group does not have,
    /// then a generation other than the group's (answered as `stale` says), then a member not
    /// yet assigned in the group's generation (it joined a rebalance still under way).
    pub(crate) fn check_committer(
        &mut self,
        member: &MemberRef,
        generation: i32,
        stale: StaleGeneration,
        now: Instant,
    ) -> Result<(), Failure> {
        let current = self.generation;
        let index = self.resolve(member)?;
        let member = &mut self.members[index];
        member.last_seen = now;
        let member_id = &member.id;
        if generation != current {
            return Err(Failure::new(
                stale.code(),
                format!("generation {generation} is not the group's current {current}: join again"),
            ));
        }
        if member.generation != current {
            return Err(Failure::new(
                ErrorCode::RebalanceInProgress,
                format!("{member_id} has no assignment in generation {current} yet: join again"),
            ));
        }
        Ok(())
    }

    /// Whether a member subscribes to `topic`.
    pub(crate) fn subscribes(&self, topic: &str) -> bool {
        self.members
            .iter()
            .any(|member| member.topics.iter().any(|t| t == topic))
    }

    /// Whether `member_id` was assigned `topic`/`partition` in its generation, or (in a
    /// cooperative group) held it before and is giving it up: a cooperative member learns what
    /// it loses after the rebalance, and commits its position there in the new generation (as
    /// Kafka's coordinator allows), so that the next owner starts from it.
    pub(crate) fn owns(&self, member_id: &str, topic: &str, partition: u32) -> bool {
        self.find(member_id).is_some_and(|m| {
            m.assignment
                .iter()
                .chain(&m.revoking)
                .any(|(t, partitions)| t == topic && partitions.contains(&partition))
        })
    }
}

/// The partitions of `old` that `new` lacks.
fn given_up(old: &[TopicAssignment], new: &[TopicAssignment]) -> Vec<TopicAssignment> {
    let kept: HashSet<(&str, u32)> = new
        .iter()
        .flat_map(|(topic, partitions)| partitions.iter().map(|p| (topic.as_str(), *p)))
        .collect();
    old.iter()
        .filter_map(|(topic, partitions)| {
            let lost: Vec<u32> = partitions
                .iter()
                .copied()
                .filter(|p| !kept.contains(&(topic.as_str(), *p)))
                .collect();
            (!lost.is_empty()).then(|| (topic.clone(), lost))
        })
        .collect()
}

fn fenced(instance_id: &str, member_id: &str) -> Failure {
    Failure::new(
        ErrorCode::FencedInstanceId,
        format!(
            "member {member_id:?} was replaced by a newer member of instance {instance_id:?}: \
             another consumer uses the same group.instance.id"
        ),
    )
}

fn unknown_instance(instance_id: &str) -> Failure {
    Failure::new(
        ErrorCode::UnknownMember,
        format!("no member of instance {instance_id:?} is in the group"),
    )
}

fn unknown_member(member_id: &str) -> Failure {
    Failure::new(
        ErrorCode::UnknownMember,
        format!("member {member_id:?} is not in the group: join again without a member id"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    /// A dynamic member's reference.
    fn m(id: &str) -> MemberRef {
        MemberRef::dynamic(id)
    }

    fn join(group: &mut Membership, id: &str, new_id: &str, now: Instant) -> String {
        join_as(group, id, new_id, false, now)
    }

    /// A JoinGroup of an eager (`cooperative` false) or a cooperative member.
    fn join_as(
        group: &mut Membership,
        id: &str,
        new_id: &str,
        cooperative: bool,
        now: Instant,
    ) -> String {
        group
            .join(join_request(id, new_id, cooperative, &[]), now, 10)
            .unwrap()
    }

    /// A JoinGroup of member `id` (new when empty, then named `new_id`) for topic `t`,
    /// offering `protocols` (none: a native member).
    fn join_request<'a>(
        id: &'a str,
        new_id: &str,
        cooperative: bool,
        protocols: &[&str],
    ) -> Join<'a> {
        Join {
            member_id: id,
            instance_id: None,
            new_member_id: new_id.to_string(),
            client_id: "c",
            topics: vec!["t".to_string()],
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            cooperative,
            protocols: protocols.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn partitions(outcome: JoinOutcome) -> Vec<u32> {
        match outcome {
            JoinOutcome::Assigned { assignment, .. } => {
                assignment.into_iter().flat_map(|(_, p)| p).collect()
            }
            other => panic!("not assigned: {other:?}"),
        }
    }

    #[test]
    fn members_join_split_and_rebalance_on_leave() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join(&mut group, "", "a", now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2, 3, 4, 5]);
        group.join_finished(&a, now);
        assert_eq!(group.generation(), 1);

        // b joins: a learns it from its heartbeat and rejoins.
        let b = join(&mut group, "", "b", now);
        assert!(!group.try_complete(now, |_| Some(6)));
        assert_eq!(group.outcome(&b), JoinOutcome::Pending);
        let beat = group
            .heartbeat(&m(&a), 1, StaleGeneration::RebalanceInProgress, now)
            .unwrap_err();
        assert_eq!(beat.code, ErrorCode::RebalanceInProgress);
        // a may still commit what it processed in generation 1.
        assert!(group
            .check_committer(&m(&a), 1, StaleGeneration::RebalanceInProgress, now)
            .is_ok());
        assert!(group.owns(&a, "t", 5));
        join(&mut group, &a, "", now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2]);
        assert_eq!(partitions(group.outcome(&b)), [3, 4, 5]);
        group.join_finished(&a, now);
        group.join_finished(&b, now);
        assert!(group
            .heartbeat(&m(&a), 2, StaleGeneration::RebalanceInProgress, now)
            .is_ok());
        // After the rebalance a does not own 5 any more.
        assert!(!group.owns(&a, "t", 5));
        assert_eq!(
            group
                .check_committer(&m(&a), 1, StaleGeneration::RebalanceInProgress, now)
                .unwrap_err()
                .code,
            ErrorCode::RebalanceInProgress
        );
        assert_eq!(
            group
                .check_committer(&m(&a), 1, StaleGeneration::IllegalGeneration, now)
                .unwrap_err()
                .code,
            ErrorCode::NotAssigned
        );
        // An unknown member comes first, whatever its generation.
        assert_eq!(
            group
                .check_committer(&m("ghost"), 1, StaleGeneration::IllegalGeneration, now)
                .unwrap_err()
                .code,
            ErrorCode::UnknownMember
        );
        // A heartbeat of the old generation is answered as a stale commit is.
        for (stale, code) in [
            (
                StaleGeneration::RebalanceInProgress,
                ErrorCode::RebalanceInProgress,
            ),
            (StaleGeneration::IllegalGeneration, ErrorCode::NotAssigned),
        ] {
            assert_eq!(
                group.heartbeat(&m(&a), 1, stale, now).unwrap_err().code,
                code
            );
            let ghost = group.heartbeat(&m("ghost"), 1, stale, now).unwrap_err();
            assert_eq!(ghost.code, ErrorCode::UnknownMember);
        }

        group.leave(&m(&b), now).unwrap();
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        join(&mut group, &a, "", now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2, 3, 4, 5]);
        group.join_finished(&a, now);
        group.leave(&m(&a), now).unwrap();
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(
            group.leave(&m(&a), now).unwrap_err().code,
            ErrorCode::UnknownMember
        );
    }

    #[test]
    fn cooperative_members_get_a_moved_partition_once_its_owner_gave_it_up() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join_as(&mut group, "", "a", true, now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2, 3, 4, 5]);
        group.join_finished(&a, now);

        // b joins and a rejoins still holding all six: b gets none of them yet.
        let b = join_as(&mut group, "", "b", true, now);
        join_as(&mut group, &a, "", true, now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2]);
        assert_eq!(partitions(group.outcome(&b)), Vec::<u32>::new());
        group.join_finished(&a, now);
        group.join_finished(&b, now);
        // a commits what it gives up, in the new generation, as it revokes it.
        assert!(group
            .check_committer(&m(&a), 2, StaleGeneration::RebalanceInProgress, now)
            .is_ok());
        assert!(group.owns(&a, "t", 5));
        assert!(!group.owns(&b, "t", 5));

        // a revoked 3 to 5 and rejoins: the next generation hands them to b.
        join_as(&mut group, &a, "", true, now);
        join_as(&mut group, &b, "", true, now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2]);
        assert_eq!(partitions(group.outcome(&b)), [3, 4, 5]);
        group.join_finished(&a, now);
        group.join_finished(&b, now);
        assert!(!group.owns(&a, "t", 5), "given up");
        assert!(group.owns(&b, "t", 5));

        // A member that leaves holds nothing: its partitions move at once.
        group.leave(&m(&a), now).unwrap();
        join_as(&mut group, &b, "", true, now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&b)), [0, 1, 2, 3, 4, 5]);
    }

    /// An eager member gave its partitions up before it rejoined: withheld from the others,
    /// a partition it loses would wait for a rebalance that no member starts. A group with one
    /// such member moves partitions in one step.
    #[test]
    fn a_group_with_an_eager_member_moves_partitions_in_one_step() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join_as(&mut group, "", "a", false, now);
        assert!(group.try_complete(now, |_| Some(6)));
        group.join_finished(&a, now);
        // a rejoins (having revoked everything, as eager members do), then b joins last.
        join_as(&mut group, &a, "", false, now);
        let b = join_as(&mut group, "", "b", true, now);
        assert!(group.try_complete(now, |_| Some(6)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2]);
        assert_eq!(partitions(group.outcome(&b)), [3, 4, 5]);
    }

    #[test]
    fn a_topic_that_grows_rebalances_the_groups_reading_it() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join(&mut group, "", "a", now);
        assert!(!group.rebalance_for_topic("t", now), "not stable yet");
        assert!(group.try_complete(now, |_| Some(2)));
        group.join_finished(&a, now);
        assert!(!group.rebalance_for_topic("other", now));
        assert_eq!(group.state(), GroupState::Stable);
        assert!(group.rebalance_for_topic("t", now));
        let beat = group
            .heartbeat(&m(&a), 1, StaleGeneration::RebalanceInProgress, now)
            .unwrap_err();
        assert_eq!(beat.code, ErrorCode::RebalanceInProgress);
        join(&mut group, &a, "", now);
        assert!(group.try_complete(now, |_| Some(3)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1, 2]);
    }

    #[test]
    fn a_subscription_to_a_missing_topic_is_assigned_once_the_topic_exists() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join(&mut group, "", "a", now);
        assert!(group.try_complete(now, |_| None));
        assert_eq!(partitions(group.outcome(&a)), Vec::<u32>::new());
        group.join_finished(&a, now);
        // The topic is created: the member is asked to rejoin and gets its partitions.
        assert!(group.rebalance_for_topic("t", now));
        join(&mut group, &a, "", now);
        assert!(group.try_complete(now, |_| Some(2)));
        assert_eq!(partitions(group.outcome(&a)), [0, 1]);
        group.join_finished(&a, now);
        // And deleted: it gives them up.
        assert!(group.rebalance_for_topic("t", now));
        join(&mut group, &a, "", now);
        assert!(group.try_complete(now, |_| None));
        assert_eq!(partitions(group.outcome(&a)), Vec::<u32>::new());
    }

    #[test]
    fn silent_members_are_dropped() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join(&mut group, "", "a", now);
        group.try_complete(now, |_| Some(2));
        group.join_finished(&a, now);
        let b = join(&mut group, "", "b", now);
        // a never rejoins: the rebalance completes at its deadline without it.
        assert!(!group.try_complete(now + REBALANCE / 2, |_| Some(2)));
        assert!(group.try_complete(now + REBALANCE, |_| Some(2)));
        assert_eq!(group.outcome(&a), JoinOutcome::Removed);
        assert_eq!(partitions(group.outcome(&b)), [0, 1]);
        group.join_finished(&b, now + REBALANCE);
        // b stops heartbeating.
        assert!(!group.expire_sessions(now + REBALANCE + SESSION / 2));
        assert!(group.expire_sessions(now + REBALANCE + SESSION));
        assert_eq!(group.state(), GroupState::Empty);
    }

    #[test]
    fn group_size_is_bounded() {
        let now = Instant::now();
        let mut group = Membership::default();
        for n in 0..10 {
            join(&mut group, "", &format!("m{n}"), now);
        }
        assert_eq!(
            group
                .join(join_request("", "m10", false, &[]), now, 10)
                .unwrap_err()
                .code,
            ErrorCode::GroupFull
        );
    }

    /// A JoinGroup of a Kafka member offering `protocols` (none: a native member).
    fn join_offering(
        group: &mut Membership,
        id: &str,
        new_id: &str,
        protocols: &[&str],
        now: Instant,
    ) -> Result<String, Failure> {
        group.join(join_request(id, new_id, false, protocols), now, 10)
    }

    #[test]
    fn a_joiner_must_share_a_protocol_with_every_kafka_member() {
        let now = Instant::now();
        let mut group = Membership::default();
        let code = |result: Result<String, Failure>| result.err().map(|f| f.code);
        // Native members constrain nobody, and an empty group takes any protocols.
        join_offering(&mut group, "", "native", &[], now).unwrap();
        join_offering(&mut group, "", "a", &["range", "roundrobin"], now).unwrap();
        join_offering(&mut group, "", "b", &["roundrobin", "sticky"], now).unwrap();
        // Every Kafka member offers roundrobin; range is a's alone.
        assert_eq!(
            code(join_offering(&mut group, "", "c", &["range"], now)),
            Some(ErrorCode::InvalidGroupKind)
        );
        assert_eq!(group.members().len(), 3, "the refused member was not added");
        join_offering(&mut group, "", "c", &["sticky", "roundrobin"], now).unwrap();
        // A rejoin counts the member's own earlier protocols: b may not drop roundrobin for
        // range, which c does not offer.
        assert_eq!(
            code(join_offering(&mut group, "b", "", &["range"], now)),
            Some(ErrorCode::InvalidGroupKind)
        );
        // A native member joins whatever the Kafka members offer.
        join_offering(&mut group, "", "native2", &[], now).unwrap();
        // The protocols are checked before the member id, as by Kafka.
        assert_eq!(
            code(join_offering(&mut group, "ghost", "", &["range"], now)),
            Some(ErrorCode::InvalidGroupKind)
        );
        assert_eq!(
            code(join_offering(&mut group, "ghost", "", &["roundrobin"], now)),
            Some(ErrorCode::UnknownMember)
        );
    }

    /// A JoinGroup of a static member of `instance` (member id `id`, empty when it starts),
    /// subscribed to `topics`.
    fn join_static<'a>(
        group: &mut Membership,
        id: &'a str,
        instance: &'a str,
        new_id: &str,
        topics: &[&str],
        now: Instant,
    ) -> Result<String, Failure> {
        let mut join = join_request(id, new_id, false, &["range"]);
        join.instance_id = Some(instance);
        join.topics = topics.iter().map(|t| t.to_string()).collect();
        group.join(join, now, 2)
    }

    fn as_static(member_id: &str, instance: &str) -> MemberRef {
        MemberRef {
            member_id: member_id.to_string(),
            instance_id: Some(instance.to_string()),
        }
    }

    #[test]
    fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join_static(&mut group, "", "i-a", "a1", &["t"], now).unwrap();
        let b = join_static(&mut group, "", "i-b", "b1", &["t"], now).unwrap();
        assert!(group.try_complete(now, |_| Some(4)));
        let a_partitions = partitions(group.outcome(&a));
        group.join_finished(&a, now);
        group.join_finished(&b, now);
        assert_eq!(group.generation(), 1);

        // a's process restarts (it did not leave) and joins again without a member id; the
        // group is full, but a replacement adds no member.
        let a2 = join_static(&mut group, "", "i-a", "a2", &["t"], now).unwrap();
        assert_eq!(a2, "a2");
        assert_eq!(group.state(), GroupState::Stable, "no rebalance");
        assert_eq!(group.generation(), 1);
        assert_eq!(partitions(group.outcome(&a2)), a_partitions);
        group.join_finished(&a2, now);
        // b goes on undisturbed; the old a is fenced everywhere, a2 is the member.
        let beat = |group: &mut Membership, member: &MemberRef| {
            group
                .heartbeat(member, 1, StaleGeneration::IllegalGeneration, now)
                .err()
                .map(|f| f.code)
        };
        assert_eq!(beat(&mut group, &as_static(&b, "i-b")), None);
        assert_eq!(beat(&mut group, &as_static(&a2, "i-a")), None);
        let old = as_static(&a, "i-a");
        assert_eq!(beat(&mut group, &old), Some(ErrorCode::FencedInstanceId));
        let commit = group.check_committer(&old, 1, StaleGeneration::IllegalGeneration, now);
        assert_eq!(commit.unwrap_err().code, ErrorCode::FencedInstanceId);
        assert_eq!(
            group.leave(&old, now).unwrap_err().code,
            ErrorCode::FencedInstanceId
        );
        // Without its instance id the old member is merely unknown, as in Kafka.
        assert_eq!(beat(&mut group, &m(&a)), Some(ErrorCode::UnknownMember));
        assert!(group.is_fenced("i-a", &a));
        assert!(!group.is_fenced("i-a", &a2));
        // A rejoin naming the old member id is fenced too; one naming the new id is a rejoin.
        let code = join_static(&mut group, &a, "i-a", "", &["t"], now).unwrap_err();
        assert_eq!(code.code, ErrorCode::FencedInstanceId);
        assert_eq!(group.state(), GroupState::Stable);
    }

    #[test]
    fn a_static_member_restarting_with_another_subscription_rebalances() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join_static(&mut group, "", "i-a", "a1", &["t"], now).unwrap();
        assert!(group.try_complete(now, |_| Some(2)));
        group.join_finished(&a, now);
        let a2 = join_static(&mut group, "", "i-a", "a2", &["t", "u"], now).unwrap();
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(group.outcome(&a2), JoinOutcome::Pending);
        assert!(group.try_complete(now, |_| Some(2)));
        assert_eq!(group.generation(), 2);
        assert_eq!(partitions(group.outcome(&a2)), [0, 1, 0, 1]);
    }

    #[test]
    fn a_static_member_replaced_while_it_waits_in_a_rebalance_is_fenced() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join_static(&mut group, "", "i-a", "a1", &["t"], now).unwrap();
        // a's JoinGroup still waits (a rebalance is under way) when its instance starts again.
        let a2 = join_static(&mut group, "", "i-a", "a2", &["t"], now).unwrap();
        assert_eq!(group.outcome(&a), JoinOutcome::Removed);
        assert!(group.is_fenced("i-a", &a));
        assert!(group.try_complete(now, |_| Some(2)));
        assert_eq!(partitions(group.outcome(&a2)), [0, 1]);
        assert_eq!(group.members().len(), 1);
    }

    #[test]
    fn an_admin_removes_a_static_member_by_its_instance_alone() {
        let now = Instant::now();
        let mut group = Membership::default();
        let a = join_static(&mut group, "", "i-a", "a1", &["t"], now).unwrap();
        assert!(group.try_complete(now, |_| Some(2)));
        group.join_finished(&a, now);
        let unknown = group.leave(&as_static("", "i-x"), now).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::UnknownMember);
        group.leave(&as_static("", "i-a"), now).unwrap();
        assert_eq!(group.state(), GroupState::Empty);
        // The instance may join again, as a new member.
        let a2 = join_static(&mut group, "", "i-a", "a2", &["t"], now).unwrap();
        assert!(group.try_complete(now, |_| Some(2)));
        assert_eq!(group.generation(), 2);
        assert_eq!(partitions(group.outcome(&a2)), [0, 1]);
    }
}
